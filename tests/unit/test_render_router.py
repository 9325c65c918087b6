"""The hybrid router in the bundle (site `router/policy.yaml`): validated before anything is written, the
deployed policy serialized, the closed API's key never in the bundle, the gateway sending /v1/ to the router.
Sites without a policy keep their bundles byte for byte (the golden bundles in test_render.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from router.policy import parse_policy
from tests.unit.test_render import CASES, HOSTS, _site, _weights
from toolkit.errors import RenderError
from toolkit.render.bundle import load_vars, render
from toolkit.render.site import load_site

KEY = "sk-test-closed-api-key-0123456789"
POLICY = {
    "remote": {"base_url": "https://api.example.net:8443/v1", "api_key_file": "remote.key",
               "aliases": {"frontier": "provider-model"}},
    "callers": {"remote_allowed": ["*"]},
    "detect": {"identifiers": ["CREDIT_CARD", "IBAN_CODE"], "code_names": ["Bluebird"]},
}


def _router_site(tmp: Path, policy: dict | str = POLICY, key_mode: int = 0o600) -> Path:
    site = _site(tmp, HOSTS["cpu-tiny"])
    (site / "router").mkdir()
    (site / "router" / "policy.yaml").write_text(policy if isinstance(policy, str) else yaml.safe_dump(policy))
    key = site / "router" / "remote.key"
    key.write_text(KEY + "\n")
    key.chmod(key_mode)
    return site


def _render(tmp: Path, site: Path):
    return render(CASES["cpu-tiny"](), load_site(site), tmp / "build" / "b", weights_source=_weights(tmp))


def test_router_bundle(tmp_path):
    bundle = _render(tmp_path, _router_site(tmp_path))
    r = bundle.vars.selfhost_router
    assert r is not None and r.container.endswith("-router")
    assert [(t.host, t.port) for t in r.egress_allow] == [("api.example.net", 8443)]
    assert r.dir.endswith("/router"), "the audit log is <root>/<name>/router/audit.jsonl (route audit's contract)"
    extravars = load_vars((bundle.path / "env" / "extravars").read_text())
    assert extravars["selfhost_router"]["remote_key_source"].endswith("router/remote.key")
    deployed = yaml.safe_load((bundle.path / "files" / "router" / "policy.yaml").read_text())
    assert deployed["local"]["base_url"] == f"http://{bundle.vars.selfhost_vllm_container}:8000/v1"
    assert deployed["remote"]["api_key_file"] == "/etc/selfhost/router/remote.key"
    assert deployed["audit"]["path"] == r.audit_mount
    parse_policy(deployed)  # what the router will load
    for f in bundle.path.rglob("*"):
        if f.is_file():
            assert KEY not in f.read_text(errors="replace"), f"the closed API's key leaked into {f}"
    nginx = (bundle.path / "files" / "gateway" / "nginx.conf").read_text()
    assert "location /v1/ {" in nginx
    assert f"http://{r.container}:{r.port}" in nginx
    # The caller is the request's API key's label (api-keys.conf), never the client's header; keys from before
    # labels (value 1) carry the site's default label.
    assert "proxy_set_header X-Selfhost-Caller $selfhost_caller;" in nginx
    assert 'map $selfhost_api_key_ok $selfhost_caller {' in nginx and '"1" "default";' in nginx
    assert '"0" "";' in nginx and nginx.count('if ($selfhost_caller = "") {') == 2
    assert f"include {bundle.vars.selfhost_gateway_mount}/router.conf;" in nginx
    images = [i.ref for i in (bundle.vars.selfhost_images_vllm, bundle.vars.selfhost_images_gateway)]
    assert r.image.ref not in images


@pytest.mark.parametrize("policy, words", [
    ({**POLICY, "detect": {"identifers": []}}, "detect.identifers: unknown key"),
    ({**POLICY, "audit": {"path": "/tmp/x"}}, "audit: decided by selfhost render"),
    ({**POLICY, "remote": {**POLICY["remote"], "base_url": "ftp://x"}}, "remote.base_url"),
    ({**POLICY, "remote": {**POLICY["remote"], "api_key_file": "missing.key"}}, "missing.key"),
    ("remote: [unclosed", "not valid YAML"),
    ({**POLICY, "callers": {"models": {"team-a": ["frontier", "no-such-adapter"]}}}, "'no-such-adapter' is not served"),
    ({**POLICY, "callers": {"models": {"bad label": ["frontier"]}}}, "caller label"),
])
def test_bad_policy_is_one_line_and_nothing_is_written(tmp_path, policy, words):
    site = _router_site(tmp_path, policy)
    with pytest.raises(RenderError) as e:
        _render(tmp_path, site)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "build").exists()


def test_key_readable_by_others_is_refused(tmp_path):
    with pytest.raises(RenderError, match="readable by group/other"):
        _render(tmp_path, _router_site(tmp_path, key_mode=0o644))


def test_no_remote_means_no_egress(tmp_path):
    bundle = _render(tmp_path, _router_site(tmp_path, {"detect": {"code_names": ["Bluebird"]}}))
    assert bundle.vars.selfhost_router.egress_allow == []
    assert bundle.vars.selfhost_router.remote_key_source is None


def test_allow_list_names_the_served_model_aliases_and_star(tmp_path):
    served = CASES["cpu-tiny"]().vllm.served_model_name
    policy = {**POLICY, "callers": {"local_only": ["legal"], "models": {"legal": [served, "frontier"], "*": ["*"]}}}
    bundle = _render(tmp_path, _router_site(tmp_path, policy))
    deployed = yaml.safe_load((bundle.path / "files" / "router" / "policy.yaml").read_text())
    assert deployed["callers"]["models"] == {"legal": [served, "frontier"], "*": ["*"]}


def test_the_site_default_label_is_checked(tmp_path):
    site = _router_site(tmp_path)
    gv = site / "group_vars" / "inference.yml"
    gv.write_text(gv.read_text() + "selfhost_router_caller_label: '1'\n")
    with pytest.raises(RenderError, match="selfhost_router_caller_label"):
        _render(tmp_path, site)
