"""Render stage: site folders, templates, PKI and golden bundles (no network, no Docker).

Golden bundles live in tests/unit/golden/<case>/ (plan.yml + expected/). Refresh them with
`UPDATE_GOLDEN=1 pytest tests/unit/test_render.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from toolkit.render import pki
from toolkit.errors import ConfigError, RenderError
from toolkit.plan.model import Plan
from toolkit.render.bundle import render
from toolkit.render.site import init_site, load_site
from toolkit.render.templates import Templates, list_templates, packaged_dir

GOLDEN = Path(__file__).parent / "golden"
UPDATE = bool(os.environ.get("UPDATE_GOLDEN"))
# Compared byte for byte; project/ is a verbatim copy of playbooks/ (owned elsewhere).
COMPARED_DIRS = ("env", "files", "inventory", "prometheus", "grafana")


def _plan(name, *, model, served, weights_gib, max_pos, hardware, vllm, runtime, memory, capacity) -> Plan:
    return Plan.model_validate({
        "toolkit_version": "0.1.0",
        "name": name,
        "model": {"id": model, "base_id": model, "served_model_name": served, "weights_gib": weights_gib,
                  "max_position_embeddings": max_pos},
        "hardware": hardware,
        "vllm": {"served_model_name": served, **vllm},
        "runtime": {"vllm_version": "0.32.0", **runtime},
        "memory": memory,
        "capacity": capacity,
        "performance": {"decode_tokens_per_s": 50.0, "aggregate_tokens_per_s": 800.0, "per_user_tokens_per_s": 25.0,
                        "at_concurrency": 32, "assumptions": ["illustrative numbers for the golden test"]},
        "license": {"license": "llama3.1", "allowed": True, "summary": "allowed", "duties": [],
                    "openness": {"weights": True}},
    })


def _mem(total, requested, weights, kv):
    return {"total_gib": total, "requested_gib": requested, "weights_gib": weights, "activation_gib": 1.0,
            "non_torch_gib": 0.5, "cuda_graph_gib": 0.5, "kv_cache_gib": kv, "headroom_gib": 1.0}


def _cap(max_len, tokens):
    return {"kv_cache_tokens": tokens, "max_model_len": max_len, "max_model_len_possible": tokens,
            "max_concurrency": round(tokens / max_len, 2), "kv_bytes_per_token": 131072}


CASES = {
    "gpu-tp1-llama8b-l40s": lambda: _plan(
        "llama-8b", model="meta-llama/Llama-3.1-8B-Instruct", served="llama-3.1-8b", weights_gib=14.96,
        max_pos=131072,
        hardware={"device": "gpu", "gpu": "L40S", "memory_gib": 44.39},
        vllm={"model": "/models/llama-3.1-8b", "max_model_len": 32768, "gpu_memory_utilization": 0.9,
              "max_num_seqs": 64, "max_num_batched_tokens": 8192},
        runtime={"image": "vllm/vllm-openai:v0.32.0", "load_time_s": 180},
        memory=_mem(44.39, 39.95, 14.96, 22.99), capacity=_cap(32768, 188000)),
    "gpu-tp4-llama70b-h100": lambda: _plan(
        "llama-70b", model="meta-llama/Llama-3.1-70B-Instruct", served="llama-3.1-70b", weights_gib=131.4,
        max_pos=131072,
        hardware={"device": "gpu", "gpu": "H100-SXM-80GB", "memory_gib": 79.19, "tensor_parallel_size": 4,
                  "gpus_per_replica": 4},
        vllm={"model": "/models/llama-3.1-70b", "tensor_parallel_size": 4, "max_model_len": 65536,
              "gpu_memory_utilization": 0.92, "max_num_seqs": 128, "max_num_batched_tokens": 8192},
        runtime={"image": "vllm/vllm-openai:v0.32.0", "load_time_s": 900, "env": {"NCCL_P2P_LEVEL": "NVL"}},
        memory=_mem(79.19, 72.85, 32.85, 36.5), capacity=_cap(65536, 478000)),
    "cpu-tiny": lambda: _plan(
        "tiny-cpu", model="selfhost-test/tiny-llama", served="tiny", weights_gib=0.01, max_pos=2048,
        hardware={"device": "cpu", "memory_gib": 1.0},
        vllm={"model": "/models/tiny", "max_model_len": 2048, "max_num_seqs": 4, "max_num_batched_tokens": 2048},
        runtime={"image": "selfhost-test/vllm-cpu:0.32.0", "load_time_s": 60, "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}},
        memory=_mem(1.0, 1.0, 0.01, 0.9), capacity=_cap(2048, 16384)),
}

HOSTS = {
    "gpu-tp1-llama8b-l40s": {"gpu-01": {"ansible_host": "10.0.0.11"}, "gpu-02": {"ansible_host": "10.0.0.12"}},
    "gpu-tp4-llama70b-h100": {"hgx-01": {"ansible_host": "hgx-01.lab.internal"}},
    "cpu-tiny": {"testhost-1": {"ansible_host": "127.0.0.1", "ansible_port": 2222}},
}


def _site(tmp: Path, hosts: dict, group_vars: str = "ansible_user: deploy\n") -> Path:
    site = tmp / "site"
    init_site(site)
    (site / "hosts.yml").write_text(yaml.safe_dump({"inference": {"hosts": hosts}}))
    (site / "group_vars" / "inference.yml").write_text(group_vars)
    return site


def _weights(tmp: Path) -> Path:
    w = tmp / "weights"
    (w / "sub").mkdir(parents=True)
    (w / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}\n')
    (w / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (w / "sub" / "tokenizer.json").write_text("{}\n")
    (w / ".cache").mkdir()
    (w / ".cache" / "lock").write_text("ignored\n")
    return w


def _normalise(text: str, tmp: Path) -> str:
    return text.replace(str(tmp.absolute()), "<TMP>")


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


# ---------------------------------------------------------------- golden bundles

@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_bundle(case, tmp):
    plan = CASES[case]()
    case_dir = GOLDEN / case
    rewrote = []
    if UPDATE and (not (case_dir / "plan.yml").exists() or Plan.load(case_dir / "plan.yml") != plan):
        case_dir.mkdir(parents=True, exist_ok=True)
        plan.dump(case_dir / "plan.yml")
        rewrote.append("plan.yml")
    assert Plan.load(case_dir / "plan.yml") == plan, "plan.yml is stale: run with UPDATE_GOLDEN=1"

    site = _site(tmp, HOSTS[case])
    bundle = render(plan, load_site(site), tmp / "build" / plan.name, weights_source=_weights(tmp))

    got = {}
    for rel in bundle.files:
        if rel.split("/")[0] in COMPARED_DIRS:
            got[rel] = _normalise((bundle.path / rel).read_text(), tmp)
    lock = yaml.safe_load((bundle.path / "selfhost.lock.yml").read_text())
    lock["playbooks_sha256"] = "<PLAYBOOKS>"
    got["selfhost.lock.yml"] = yaml.safe_dump(lock, sort_keys=False)

    expected_dir = case_dir / "expected"
    expected = {p.relative_to(expected_dir).as_posix(): p.read_text()
                for p in sorted(expected_dir.rglob("*")) if p.is_file()}
    if UPDATE and (expected != got or rewrote):
        shutil.rmtree(expected_dir, ignore_errors=True)
        for rel, text in got.items():
            (expected_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / rel).write_text(text)
        # A run that rewrites the golden files proves nothing: it fails, so the diff gets reviewed and
        # a second run (without UPDATE_GOLDEN) is what passes.
        pytest.fail(f"{case}: golden files rewritten; review `git diff {expected_dir}` and run again without UPDATE_GOLDEN")
    assert sorted(got) == sorted(expected), "file list changed: run with UPDATE_GOLDEN=1 and review"
    for rel in expected:
        assert got[rel] == expected[rel], f"{case}/{rel} differs: run with UPDATE_GOLDEN=1 and review the diff"


def test_bundle_is_deterministic(tmp):
    plan = CASES["cpu-tiny"]()
    site = load_site(_site(tmp, HOSTS["cpu-tiny"]))
    weights = _weights(tmp)
    a = render(plan, site, tmp / "a", weights_source=weights)
    b = render(plan, site, tmp / "b", weights_source=weights)
    assert a.files == b.files
    for rel in a.files:
        assert (a.path / rel).read_bytes() == (b.path / rel).read_bytes(), rel


def test_bundle_layout_and_vars(tmp):
    plan = CASES["gpu-tp4-llama70b-h100"]()
    bundle = render(plan, load_site(_site(tmp, HOSTS["gpu-tp4-llama70b-h100"])), tmp / "out",
                    weights_source=_weights(tmp))
    for rel in ("env/extravars", "env/settings", "env/envvars", "inventory/hosts.yml", "files/weights.sha256",
                "files/docker/compose.yaml", "files/gateway/nginx.conf", "prometheus/scrape.yml",
                "selfhost.lock.yml"):
        assert rel in bundle.files
    assert any(f.startswith("project/") for f in bundle.files) or not any(
        p.is_file() for p in (Path(__file__).parents[2] / "playbooks").rglob("*"))
    v = bundle.vars
    assert v.selfhost_vllm_ipc_host and v.selfhost_vllm_shm_size == "16g" and v.selfhost_vllm_gpus == "4"
    assert v.selfhost_vllm_argv[:2] == ["--model", "/models/llama-3.1-70b"]
    assert v.selfhost_vllm_env["HF_HUB_OFFLINE"] == "1" and v.selfhost_vllm_env["NCCL_P2P_LEVEL"] == "NVL"
    assert v.selfhost_vllm_health_start_period_s == 900
    assert v.selfhost_preflight_min_disk_gib == pytest.approx(131.4 * 2 + 12.5, abs=0.1)
    from toolkit.render.bundle import load_vars
    extravars = load_vars((bundle.path / "env/extravars").read_text())
    assert extravars == v.model_dump(mode="json")


@pytest.mark.parametrize("case", sorted(CASES))
def test_compose_and_env_file_are_the_server_spec(case, tmp):
    """files/docker/compose.yaml and files/vllm/vllm.env are dumped from selfhost_server, not templated."""
    plan = CASES[case]()
    bundle = render(plan, load_site(_site(tmp, HOSTS[case])), tmp / "out", weights_source=_weights(tmp))
    spec = bundle.vars.selfhost_server
    compose = yaml.safe_load((bundle.path / "files/docker/compose.yaml").read_text())
    vllm = compose["services"]["vllm"]
    assert (vllm["image"], vllm["container_name"], vllm["command"]) == (spec.image, spec.container, spec.argv)
    assert vllm["environment"] == spec.env and vllm["labels"] == spec.labels
    assert vllm["volumes"] == [f"{m.source}:{m.target}" + (":ro" if m.read_only else "") for m in spec.mounts]
    assert vllm.get("ipc") == spec.ipc_mode and vllm.get("shm_size") == spec.shm_size
    assert compose["networks"]["internal"] == {"name": spec.network, "internal": True}
    h = vllm["healthcheck"]
    assert (h["test"], h["interval"], h["start_period"]) == (spec.healthcheck.test, spec.healthcheck.interval,
                                                            spec.healthcheck.start_period)
    devices = (vllm.get("deploy") or {}).get("resources", {}).get("reservations", {}).get("devices", [])
    assert [d["count"] for d in devices] == [d.count for d in spec.device_requests]
    env_lines = [ln for ln in (bundle.path / "files/vllm/vllm.env").read_text().splitlines() if not ln.startswith("#")]
    assert env_lines == [f"{k}={v}" for k, v in spec.env.items()]


def test_offline_env_is_applied_last_and_cannot_be_overridden():
    from toolkit.errors import ConfigError
    from toolkit.render.server import OFFLINE_ENV, server_env

    env = server_env({"NCCL_P2P_LEVEL": "NVL", "HF_HUB_OFFLINE": "1"}, "/var/cache/vllm")
    assert {k: env[k] for k in OFFLINE_ENV} == OFFLINE_ENV and env["NCCL_P2P_LEVEL"] == "NVL"
    assert list(env) == sorted(env)
    with pytest.raises(ConfigError) as exc:
        server_env({"HF_HUB_OFFLINE": "0"}, "/c")
    assert "\n" not in exc.value.message and "HF_HUB_OFFLINE" in exc.value.message
    for bad in ({"lower": "x"}, {"A": "two\nlines"}, {"B": "esc\x1b"}):
        with pytest.raises(ConfigError):
            server_env(bad, "/c")


def test_manifest_lists_every_weight_file_sorted(tmp):
    plan = CASES["cpu-tiny"]()
    bundle = render(plan, load_site(_site(tmp, HOSTS["cpu-tiny"])), tmp / "out", weights_source=_weights(tmp))
    lines = (bundle.path / "files/weights.sha256").read_text().splitlines()
    assert [line.split("  ", 1)[1] for line in lines] == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", line.split("  ")[0]) for line in lines)


def test_weight_hashes_are_cached(tmp):
    plan = CASES["cpu-tiny"]()
    site = load_site(_site(tmp, HOSTS["cpu-tiny"]))
    weights = _weights(tmp)
    render(plan, site, tmp / "out", weights_source=weights)
    cache_file = site.cache_dir / "sha256.json"
    cache = json.loads(cache_file.read_text())
    key = str((weights / "model.safetensors").resolve())
    cache[key]["sha256"] = "c" * 64  # a cache hit must be believed without reading the file
    cache_file.write_text(json.dumps(cache))
    bundle = render(plan, site, tmp / "out", weights_source=weights)
    assert f"{'c' * 64}  model.safetensors" in (bundle.path / "files/weights.sha256").read_text()

    (weights / "model.safetensors").write_bytes(b"changed")  # new size → hashed again
    bundle = render(plan, site, tmp / "out", weights_source=weights)
    assert "c" * 64 not in (bundle.path / "files/weights.sha256").read_text()


# ---------------------------------------------------------------- template rules

def test_templates_hold_no_decisions():
    forbidden = re.compile(r"\{%-?\s*if\b|\bis\s+(not\s+)?defined\b|\bdefault\s*\(")
    offenders = []
    for path in sorted(packaged_dir().rglob("*.j2")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if forbidden.search(line):
                offenders.append(f"{path.relative_to(packaged_dir())}:{n}: {line.strip()}")
    assert not offenders, "decide in toolkit/render.py, not in templates:\n" + "\n".join(offenders)


def test_every_packaged_template_is_used_by_some_device():
    from toolkit.render.bundle import template_outputs
    used = {t for device in ("gpu", "cpu") for fleet in (False, True) for t in template_outputs(device, fleet=fleet).values()}
    assert used == set(list_templates())


def test_strict_undefined(tmp):
    over = tmp / "templates"
    (over / "vllm").mkdir(parents=True)
    (over / "vllm" / "vllm.env.j2").write_text("{{ deploy.no_such_field }}\n")
    with pytest.raises(RenderError, match="no_such_field"):
        Templates(over).render("vllm/vllm.env.j2", {"deploy": object()})


def test_site_template_override_is_recorded_in_lock(tmp):
    site = _site(tmp, HOSTS["cpu-tiny"])
    (site / "templates" / "systemd").mkdir(parents=True)
    (site / "templates" / "systemd" / "selfhost.service.j2").write_text(
        "# ours\nExecStart=/usr/bin/docker start {{ deploy.selfhost_vllm_container }}\n")
    bundle = render(CASES["cpu-tiny"](), load_site(site), tmp / "out", weights_source=_weights(tmp))
    assert (bundle.path / "files/systemd/selfhost.service").read_text().startswith("# ours\n")
    lock = yaml.safe_load((bundle.path / "selfhost.lock.yml").read_text())
    assert lock["overridden"] == ["systemd/selfhost.service.j2"]
    assert lock["templates"]["systemd/selfhost.service.j2"]["source"] == "site"
    assert lock["templates"]["gateway/nginx.conf.j2"]["source"] == "packaged"


# ---------------------------------------------------------------- site folders

def test_init_creates_example_and_never_overwrites(tmp):
    site = tmp / "prod"
    created = init_site(site)
    assert site / "hosts.yml" in created and site / "group_vars" / "inference.yml" in created
    assert (site / "templates").is_dir()
    (site / "hosts.yml").write_text("mine\n")
    with pytest.raises(ConfigError, match="already exists \\(remove it first or pick another name\\)"):
        init_site(site)
    assert (site / "hosts.yml").read_text() == "mine\n"


def test_fresh_example_site_asks_for_a_host(tmp):
    init_site(tmp / "s")
    with pytest.raises(ConfigError) as exc:
        load_site(tmp / "s")
    assert exc.value.message == f"{tmp / 's' / 'hosts.yml'}: inference.hosts: needs at least one host"


def test_example_group_vars_document_every_setting():
    from toolkit.resources import data_dir
    from toolkit.render.site import SiteSettings
    text = (data_dir("inventories") / "example" / "group_vars" / "inference.yml").read_text()
    missing = [name for name in SiteSettings.model_fields if f"# {name}:" not in text]
    assert not missing


@pytest.mark.parametrize("hosts_yml, message", [
    ("webservers:\n  hosts:\n    a: {}\n", "hosts.yml: no group 'inference' with hosts"),
    ("inference:\n  hosts:\n    a: [1]\n", "hosts.yml: inference.hosts.a: expected a mapping of host vars"),
    ("inference: [\n", "hosts.yml: not valid YAML"),
    ("- a\n", "hosts.yml: expected a mapping at the top level"),
])
def test_bad_inventory_names_the_file_and_path(tmp, hosts_yml, message):
    site = _site(tmp, {"a": None})
    (site / "hosts.yml").write_text(hosts_yml)
    with pytest.raises(ConfigError) as exc:
        load_site(site)
    assert exc.value.message.startswith(str(site / message.split(":")[0]))
    assert message in exc.value.message


def test_inventory_under_all_children_is_accepted(tmp):
    site = _site(tmp, {"a": None})
    (site / "hosts.yml").write_text("all:\n  children:\n    inference:\n      hosts:\n        a:\n          ansible_host: 10.1.1.1\n")
    loaded = load_site(site)
    assert [(h.name, h.address) for h in loaded.hosts] == [("a", "10.1.1.1")]


def test_missing_site_folder(tmp):
    with pytest.raises(ConfigError, match="no such site folder"):
        load_site(tmp / "nope")


def test_unknown_group_var_suggests_the_right_key(tmp):
    site = _site(tmp, {"a": None}, group_vars="ansible_user: x\nselfhost_gateway_prot: 8443\n")
    with pytest.raises(ConfigError) as exc:
        load_site(site)
    assert exc.value.message == (f"{site / 'group_vars' / 'inference.yml'}: unknown key 'selfhost_gateway_prot'"
                                 " — did you mean 'selfhost_gateway_port'?")


def test_connection_vars_pass_through_to_the_inventory(tmp):
    site = _site(tmp, {"a": {"ansible_host": "10.0.0.5"}},
                 group_vars="ansible_user: ops\nansible_port: 2200\nansible_ssh_private_key_file: ~/.ssh/k\n"
                            "selfhost_gateway_port: 8443\nselfhost_ssh_host_key_checking: false\n")
    loaded = load_site(site)
    assert loaded.settings.selfhost_gateway_port == 8443
    bundle = render(CASES["cpu-tiny"](), loaded, tmp / "out", weights_source=_weights(tmp))
    inv = yaml.safe_load((bundle.path / "inventory/hosts.yml").read_text())
    assert inv["inference"]["vars"] == {"ansible_user": "ops", "ansible_port": 2200,
                                        "ansible_ssh_private_key_file": "~/.ssh/k"}
    assert yaml.safe_load((bundle.path / "env/envvars").read_text())["ANSIBLE_HOST_KEY_CHECKING"] == "False"
    assert bundle.vars.selfhost_gateway_port == 8443


def test_passwords_in_the_inventory_are_refused(tmp):
    site = _site(tmp, {"a": {"ansible_host": "10.0.0.5", "ansible_become_password": "hunter2"}})
    with pytest.raises(RenderError, match="ansible_become_password' would copy a secret"):
        render(CASES["cpu-tiny"](), load_site(site), tmp / "out", weights_source=_weights(tmp))
    assert not (tmp / "out").exists()


def test_weights_folder_is_required(tmp):
    site = load_site(_site(tmp, HOSTS["cpu-tiny"]))
    with pytest.raises(RenderError, match="no weights folder given"):
        render(CASES["cpu-tiny"](), site, tmp / "out")
    with pytest.raises(RenderError, match="weights folder not found"):
        render(CASES["cpu-tiny"](), site, tmp / "out", weights_source=tmp / "missing")


def test_weights_and_tarballs_from_group_vars_are_site_relative(tmp):
    site = _site(tmp, HOSTS["cpu-tiny"], group_vars="selfhost_weights_source: ../weights\n"
                                                    "selfhost_images_vllm_tarball: images/vllm.tar\n")
    _weights(tmp)
    (site / "images").mkdir()
    (site / "images" / "vllm.tar").write_bytes(b"x" * 1024)
    bundle = render(CASES["cpu-tiny"](), load_site(site), tmp / "out")
    assert bundle.vars.selfhost_images_vllm.tarball == str((site / "images" / "vllm.tar").absolute())
    assert bundle.vars.selfhost_images_vllm.sha256 == __import__("hashlib").sha256(b"x" * 1024).hexdigest()
    assert Path(bundle.vars.selfhost_weights_source) == (site / ".." / "weights").absolute()


# ---------------------------------------------------------------- bundle safety

def test_render_replaces_an_existing_bundle_atomically(tmp, monkeypatch):
    plan = CASES["cpu-tiny"]()
    site = load_site(_site(tmp, HOSTS["cpu-tiny"]))
    weights = _weights(tmp)
    out = tmp / "build" / "tiny"
    render(plan, site, out, weights_source=weights)
    (out / "stale-file").write_text("from an older render\n")
    before = (out / "env/extravars").read_text()

    import toolkit.render.bundle as r
    real = r._write
    def failing(path, text):
        if path.name == "RUNBOOK.md":
            raise OSError("disk full")
        real(path, text)
    monkeypatch.setattr(r, "_write", failing)
    with pytest.raises(OSError):
        render(plan, site, out, weights_source=weights, force=True)
    assert (out / "stale-file").exists() and (out / "env/extravars").read_text() == before  # untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]  # no temp dir left behind

    monkeypatch.setattr(r, "_write", real)
    with pytest.raises(RenderError, match="stale-file"):  # a file render did not write: kept unless --force
        render(plan, site, out, weights_source=weights)
    render(plan, site, out, weights_source=weights, force=True)
    assert not (out / "stale-file").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]


def test_render_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp):
    out = tmp / "docs"
    out.mkdir()
    (out / "important.txt").write_text("keep me\n")
    with pytest.raises(RenderError, match="is not a selfhost bundle"):
        render(CASES["cpu-tiny"](), load_site(_site(tmp, HOSTS["cpu-tiny"])), out, weights_source=_weights(tmp))
    assert (out / "important.txt").read_text() == "keep me\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_secret_material_in_the_bundle(case, tmp):
    site = _site(tmp, HOSTS[case])
    bundle = render(CASES[case](), load_site(site), tmp / "out", weights_source=_weights(tmp))
    keys = [p.read_text() for p in (site / "pki").rglob("*.key")]
    assert keys
    for rel in bundle.files:
        data = (bundle.path / rel).read_bytes()
        assert b"PRIVATE KEY" not in data, rel
        assert b"BEGIN CERTIFICATE" not in data, rel
        assert not any(k.encode() in data for k in keys)


def test_rendered_bundle_passes_yamllint(tmp):
    yamllint = Path(sys.executable).with_name("yamllint")
    if not yamllint.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("yamllint is not installed: the test extra provides it (pip install -e '.[test]')")
        pytest.skip("yamllint not installed")
    bundle = render(CASES["gpu-tp1-llama8b-l40s"](), load_site(_site(tmp, HOSTS["gpu-tp1-llama8b-l40s"])),
                    tmp / "out", weights_source=_weights(tmp))
    targets = [str(bundle.path / f) for f in ("env/extravars", "env/envvars", "env/settings", "inventory/hosts.yml",
                                              "prometheus/scrape.yml", "selfhost.lock.yml", "files/docker/compose.yaml")]
    result = subprocess.run([str(yamllint), "-d", "relaxed", *targets], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# ---------------------------------------------------------------- PKI

def test_ca_and_host_certs_are_made_once_and_reused(tmp):
    d = tmp / "pki"
    crt, key = pki.ensure_ca(d)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = crt.read_bytes()
    assert pki.ensure_ca(d)[0].read_bytes() == first

    sans = pki.sans_for("gpu-01", "10.0.0.11")
    hcrt, hkey = pki.ensure_host_cert(d, "gpu-01", sans)
    assert stat.S_IMODE(hkey.stat().st_mode) == 0o600
    issued = hcrt.read_bytes()
    assert pki.ensure_host_cert(d, "gpu-01", sans)[0].read_bytes() == issued  # reused
    pki.ensure_host_cert(d, "gpu-01", pki.sans_for("gpu-01", "10.0.0.99"))
    assert hcrt.read_bytes() != issued  # new address → new certificate

    from cryptography import x509
    cert = x509.load_pem_x509_certificate(hcrt.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(first))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(n.value) for n in names} == {"gpu-01", "10.0.0.99", "127.0.0.1", "localhost"}


def test_half_a_ca_is_an_error(tmp):
    d = tmp / "pki"
    pki.ensure_ca(d)
    (d / "ca.key").unlink()
    with pytest.raises(RenderError, match="only one of ca.crt / ca.key exists"):
        pki.ensure_ca(d)


def test_site_tls_mode_needs_its_files(tmp):
    site = _site(tmp, HOSTS["cpu-tiny"], group_vars="selfhost_tls_mode: site\nselfhost_tls_ca_cert: ca.pem\n")
    with pytest.raises(RenderError, match="selfhost_tls_ca_cert, selfhost_tls_cert, selfhost_tls_key"):
        render(CASES["cpu-tiny"](), load_site(site), tmp / "out", weights_source=_weights(tmp))
    assert not (site / "pki" / "ca.key").exists()  # no internal CA made in site mode


# ---------------------------------------------------------------- commands

def _app():
    import typer
    from toolkit.commands import deploy
    app = typer.Typer()
    deploy.register(app)
    return app


def test_cli_init_and_render(tmp):
    from typer.testing import CliRunner
    runner = CliRunner()
    site = tmp / "prod"
    res = runner.invoke(_app(), ["init", str(site)])
    assert res.exit_code == 0, res.output
    assert "hosts.yml" in res.output
    res = runner.invoke(_app(), ["init", str(site)])
    assert res.exit_code != 0 and "already exists" in str(res.exception)

    (site / "hosts.yml").write_text(yaml.safe_dump({"inference": {"hosts": HOSTS["cpu-tiny"]}}))
    plan_file = tmp / "plan.yml"
    CASES["cpu-tiny"]().dump(plan_file)
    out = tmp / "bundle"
    res = runner.invoke(_app(), ["render", str(plan_file), "-i", str(site), "--out", str(out),
                                 "--weights", str(_weights(tmp)), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["bundle"] == str(out.absolute()) and "env/extravars" in doc["files"]
    assert doc["vars"]["selfhost_name"] == "tiny-cpu"
