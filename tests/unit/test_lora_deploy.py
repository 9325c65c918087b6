"""LoRA deploy: adapters rendered like the weights (manifest, content-addressed host dir, read-only mount in the
one server spec, compose and release record), refused at render when they no longer match the plan, and the
gateway closes vLLM's runtime load/unload endpoints."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from tests.unit.test_lora import TINY, make_adapter
from tests.unit.test_render import _site
from toolkit.errors import RenderError
from toolkit.plan.planner import PlanRequest, plan
from toolkit.render.bundle import load_vars, render
from toolkit.render.server import release_record
from toolkit.render.site import load_site


@pytest.fixture()
def setup(tmp_path: Path):
    tiny = tmp_path / "tiny-llama"
    tiny.mkdir()
    (tiny / "config.json").write_text(json.dumps(TINY))
    (tiny / "tokenizer.json").write_text("{}\n")
    adapter = make_adapter(tmp_path / "ad", str(tiny), name="support")
    p = plan(PlanRequest(model=str(tiny), device="cpu", context=512, loras=[("support", str(adapter))],
                         accept_license_risk=True)).plan
    site = load_site(_site(tmp_path, {"testhost-1": {"ansible_host": "127.0.0.1"}}))
    return p, site, tiny, adapter


def test_bundle_ships_mounts_and_serves_the_adapter(setup, tmp_path):
    p, site, tiny, adapter = setup
    b = render(p, site, tmp_path / "bundle", weights_source=tiny)
    [a] = b.vars.selfhost_weights_adapters
    # manifest: every adapter file, sha256sum format, relative paths
    text = (b.path / a.manifest).read_text()
    expected = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in adapter.iterdir()}
    assert dict(reversed(line.split("  ", 1)) for line in text.splitlines()) == expected
    assert a.manifest == "files/adapters/support.sha256"
    assert a.digest == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert a.dir == f"{site.settings.selfhost_root}/{p.name}/adapters/{a.digest}/support"
    assert (a.mount, a.source) == ("/adapters/support", str(adapter.resolve()))
    # the one server spec: read-only mount, argv names the adapter by its absolute container path
    spec = b.vars.selfhost_server
    mount = next(m for m in spec.mounts if m.target == "/adapters/support")
    assert (mount.source, mount.read_only) == (a.dir, True)
    argv = spec.argv
    assert "--enable-lora" in argv and argv[argv.index("--lora-modules") + 1] == "support=/adapters/support"
    # extravars carry the spec and the adapter list the weights role reads
    ev = load_vars((b.path / "env" / "extravars").read_text())
    assert ev["selfhost_weights_adapters"][0]["dir"] == a.dir
    assert {"type": "bind", "source": a.dir, "target": "/adapters/support", "read_only": True} in ev["selfhost_server"]["mounts"]
    # compose and the release record (what a rollback re-applies) carry the mount
    compose = yaml.safe_load((b.path / "files" / "docker" / "compose.yaml").read_text())
    assert f"{a.dir}:/adapters/support:ro" in compose["services"]["vllm"]["volumes"]
    assert f"{a.dir}:/adapters/support:ro" not in compose["services"]["gateway"]["volumes"]
    assert any(m["source"] == a.dir for m in release_record(b.vars)["vllm"]["mounts"])
    # gateway: the runtime load/unload endpoints are closed before the key check and the proxy
    nginx = (b.path / "files" / "gateway" / "nginx.conf").read_text()
    block = re.search(r"location ~ (\S+) \{\s*return (\d+)", nginx)
    assert block and block.group(2) == "403"
    pattern = re.compile(block.group(1))
    for path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter", "//v1//load_lora_adapter"):
        assert pattern.match(path)
    for path in ("/v1/chat/completions", "/v1/models", "/health"):
        assert not pattern.match(path)
    assert nginx.index(block.group(0)) < nginx.index("location / {")


def test_replaced_adapter_gets_a_new_dir_and_the_old_release_keeps_its_own(setup, tmp_path):
    p, site, tiny, adapter = setup
    old = render(p, site, tmp_path / "b1", weights_source=tiny).vars.selfhost_weights_adapters[0]
    (adapter / "README.md").write_text("v2\n")  # content changes, the check still passes
    new = render(p, site, tmp_path / "b2", weights_source=tiny).vars.selfhost_weights_adapters[0]
    assert old.dir != new.dir and old.digest != new.digest


def test_adapter_changed_since_plan_is_refused_before_anything_is_written(setup, tmp_path):
    p, site, tiny, adapter = setup
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "someone/else"}))
    out = tmp_path / "bundle"
    with pytest.raises(RenderError) as err:
        render(p, site, out, weights_source=tiny)
    assert "support" in err.value.message and "not the planned model" in err.value.message
    assert "\n" not in err.value.message
    assert not out.exists()


def test_adapter_with_another_rank_is_refused(setup, tmp_path):
    p, site, tiny, adapter = setup
    import shutil

    shutil.rmtree(adapter)
    make_adapter(adapter.parent, str(tiny), name="support", r=16)
    with pytest.raises(RenderError, match="(changed since it was planned|above --max-lora-rank)"):
        render(p, site, tmp_path / "bundle", weights_source=tiny)
    assert not (tmp_path / "bundle").exists()


def test_plans_without_adapters_render_no_adapter_field_nor_block(tmp_path):
    from tests.unit.test_render import CASES, HOSTS, _weights

    site = load_site(_site(tmp_path, HOSTS["cpu-tiny"]))
    b = render(CASES["cpu-tiny"](), site, tmp_path / "bundle", weights_source=_weights(tmp_path))
    assert "selfhost_weights_adapters" not in (b.path / "env" / "extravars").read_text()
    assert "lora" not in (b.path / "files" / "gateway" / "nginx.conf").read_text()
    assert not (b.path / "files" / "adapters").exists()


def test_kubernetes_target_refuses_adapters_it_cannot_mount(setup):
    from toolkit.render import kubernetes

    p, site, tiny, adapter = setup
    with pytest.raises(RenderError, match="LoRA adapters are shipped by the Ansible bundle only"):
        kubernetes.contents(p, site)
