"""The real thing: render a CPU plan for two SSH test hosts, deploy it with `toolkit.deployer`
(the vLLM CPU image and the gateway shipped as tarballs, the tiny model with its manifest), then
prove it works, is locked down, is idempotent and heals.

Wall times of the first deploy and of the no-op re-deploy are printed (run with `-s` to see them).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.e2e.infra import hosts as infra_hosts
from toolkit import deployer
from toolkit.commands.deploy import _read_keys
from toolkit.plan import Plan
from toolkit.render import render
from toolkit.site import init_site, load_site

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_PLAN = ROOT / "tests" / "unit" / "golden" / "cpu-tiny" / "plan.yml"
TIMES: dict[str, float] = {}


def _plan(vllm_ref: str) -> Plan:
    """A CPU plan for the tiny model (the golden cpu-tiny plan, tightened for 2 shared cores)."""
    p = Plan.load(GOLDEN_PLAN)
    return p.model_copy(update={
        "name": "tiny",
        "vllm": p.vllm.model_copy(update={"max_model_len": 512, "max_num_batched_tokens": 512, "max_num_seqs": 4}),
        "runtime": p.runtime.model_copy(update={"image": vllm_ref, "load_time_s": 120,
                                                "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}}),
    })


def _events(log: list):
    def on_event(e):
        if e.status in ("changed", "failed", "unreachable"):
            log.append(e)
            print(f"  [{e.host}] {e.step}: {e.task}: {e.status}" + (f" — {e.message}" if e.message else ""),
                  flush=True)
    return on_event


@pytest.fixture(scope="module")
def lab(tmp_path_factory, test_hosts, sentinel, e2e_images, tiny_model):
    tmp = tmp_path_factory.mktemp("deploy")
    site = tmp / "site"
    init_site(site)
    (site / "hosts.yml").write_text(yaml.safe_dump({"inference": {"hosts": {
        h.name: {"ansible_host": h.ssh_host, "ansible_port": h.ssh_port} for h in test_hosts}}}))
    vllm, gw = e2e_images["vllm"], e2e_images["gateway"]
    (site / "group_vars" / "inference.yml").write_text(yaml.safe_dump({
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(test_hosts[0].private_key),
        "selfhost_ssh_host_key_checking": False,  # throwaway test hosts only
        # Ansible's default ssh_args add -C: compressing a 3.8 GB tarball on 2 cores is the bottleneck.
        "ansible_ssh_args": "-o ControlMaster=auto -o ControlPersist=60s",
        "selfhost_images_vllm_ref": vllm.ref, "selfhost_images_vllm_tarball": str(vllm.tarball),
        "selfhost_images_gateway_ref": gw.ref, "selfhost_images_gateway_tarball": str(gw.tarball),
        "selfhost_verify_egress_probe": f"{sentinel.ip}:{sentinel.port}",
    }))
    plan = _plan(vllm.ref)
    bundle = render(plan, load_site(site), tmp / "bundle", weights_source=tiny_model)
    keys_dir = tmp / "keys"
    keys_dir.mkdir()
    changes: list = []
    t0 = time.monotonic()
    result = deployer.run(bundle.path, key_fetch_dir=keys_dir, on_event=_events(changes))
    TIMES["first deploy"] = time.monotonic() - t0
    print(f"\n[e2e] first deploy: {TIMES['first deploy']:.0f}s, status {result.status}", flush=True)
    assert result.ok, [f"{f.host} {f.step}: {f.task}: {f.message}" for f in result.failed]
    keys = _read_keys(keys_dir)
    assert set(keys) == {h.name for h in test_hosts}, "a fresh key per host, fetched once"
    return {"site": site, "bundle": bundle, "plan": plan, "keys": keys, "hosts": test_hosts,
            "sentinel": sentinel, "ca": site / "pki" / "ca.crt", "first": result}


def _https(lab, host, path: str, *, key: str | None = None, body: dict | None = None):
    ctx = ssl.create_default_context(cafile=str(lab["ca"]))  # verifies the chain and the 127.0.0.1 SAN
    req = urllib.request.Request(f"https://127.0.0.1:{host.https_port}{path}",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=120, context=ctx) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


CHAT = {"model": "tiny", "max_tokens": 8, "messages": [{"role": "user", "content": "hello world"}]}


def test_chat_completion_over_https_with_the_key_on_both_hosts(lab):
    for h in lab["hosts"]:
        status, answer = _https(lab, h, "/v1/chat/completions", key=lab["keys"][h.name], body=CHAT)
        assert status == 200, h.name
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert answer["usage"]["completion_tokens"] > 0
        status, models = _https(lab, h, "/v1/models", key=lab["keys"][h.name])
        assert status == 200 and [m["id"] for m in models["data"]] == ["tiny"]


def test_no_key_or_wrong_key_gets_401(lab):
    for h in lab["hosts"]:
        assert _https(lab, h, "/v1/chat/completions", body=CHAT)[0] == 401
        assert _https(lab, h, "/v1/models", key="0" * 64)[0] == 401
        other = next(k for n, k in lab["keys"].items() if n != h.name)
        assert _https(lab, h, "/v1/models", key=other)[0] == 401, "keys are per host"


def test_server_cannot_reach_the_sentinel_but_the_host_bridge_can(lab):
    s = lab["sentinel"]
    container = lab["bundle"].vars.selfhost_vllm_container
    probe = ("import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3); print('reached')")
    for h in lab["hosts"]:
        assert infra_hosts.can_reach(h, s.url, "bridge"), "the probe must work from a normal bridge"
        res = h.exec("docker", "exec", container, "python3", "-c", probe, s.ip, str(s.port), check=False)
        assert res.returncode != 0 and b"reached" not in res.stdout, "the server must have no route out"
        inspect = json.loads(h.exec("docker", "inspect", container).stdout)[0]
        assert list(inspect["NetworkSettings"]["Networks"]) == [lab["bundle"].vars.selfhost_network_internal]
        assert inspect["HostConfig"]["PortBindings"] in ({}, None), "only the gateway publishes a port"
        mounts = {m["Destination"]: m for m in inspect["Mounts"]}
        assert mounts[lab["bundle"].vars.selfhost_vllm_model_mount]["RW"] is False


def test_second_deploy_changes_nothing(lab):
    changes: list = []
    t0 = time.monotonic()
    result = deployer.run(lab["bundle"].path, on_event=_events(changes))
    TIMES["no-op deploy"] = time.monotonic() - t0
    print(f"\n[e2e] no-op deploy: {TIMES['no-op deploy']:.0f}s, status {result.status}", flush=True)
    assert result.ok, result.failed
    assert {h: s.changed for h, s in result.hosts.items()} == {h.name: 0 for h in lab["hosts"]}, \
        [f"{e.host} {e.step}: {e.task}" for e in changes]


def test_killed_server_and_corrupt_weight_are_healed(lab):
    v = lab["bundle"].vars
    h = lab["hosts"][0]
    h.exec("docker", "kill", v.selfhost_vllm_container)
    target = f"{v.selfhost_weights_dir}/model.safetensors"
    h.exec("python3", "-c", f"f = open({target!r}, 'r+b'); f.seek(4096); f.write(b'corrupt!'); f.close()")
    assert h.exec("sh", "-c", f"cd {v.selfhost_weights_dir} && sha256sum -c --quiet {v.selfhost_weights_dir}.sha256",
                  check=False).returncode != 0

    changes: list = []
    t0 = time.monotonic()
    result = deployer.run(lab["bundle"].path, on_event=_events(changes))
    TIMES["heal deploy"] = time.monotonic() - t0
    print(f"\n[e2e] heal deploy: {TIMES['heal deploy']:.0f}s", flush=True)
    assert result.ok, result.failed
    assert result.hosts[h.name].changed > 0
    assert result.hosts[lab["hosts"][1].name].changed == 0, "the healthy host is left alone"
    check = h.exec("sh", "-c", f"cd {v.selfhost_weights_dir} && sha256sum -c --quiet {v.selfhost_weights_dir}.sha256",
                   check=False)
    assert check.returncode == 0, check.stdout
    health = h.exec("docker", "inspect", "--format", "{{.State.Health.Status}}", v.selfhost_vllm_container)
    assert health.stdout.decode().strip() == "healthy"
    status, _ = _https(lab, h, "/v1/chat/completions", key=lab["keys"][h.name], body=CHAT)
    assert status == 200


def test_report_times(lab):
    print("\n[e2e] wall times: " + ", ".join(f"{k} {v:.0f}s" for k, v in TIMES.items()), flush=True)
