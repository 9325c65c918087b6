"""A model that spans hosts: the tiny model served with pipeline parallel 2 across the session's two test hosts
(vLLM's multi-node mode, mp backend, one container per host on the host network; real vLLM CPU, real nginx).

The module stops the session's `tiny` server and gateway on both hosts (host networking shares port 443, and two
more vLLM processes would not fit beside them on this machine), deploys a PP2 plan named `tiny-pp` from a copy of
the session site (inventory order makes the group: host 1 is rank 0), proves it, destroys it, and starts the
session's containers again: the modules after it find the hosts as they were (same keys, same releases).

  * a chat completion through rank 0's gateway answers; rank 1 runs `--headless` and has no gateway;
  * the egress probe fails from inside the server on both ranks (host firewall, uid-matched), while the same
    probe from the same image on a routed bridge reaches the sentinel;
  * a second deploy changes nothing; destroy removes the firewall chain.
"""
from __future__ import annotations

import json
import time

import pytest
import yaml

from tests.e2e.conftest import ROOT, gateway_request, print_changes, selfhost_cli, site_variant, wait_healthy
from toolkit.deploy import runner as deployer

pytestmark = pytest.mark.e2e

CHAT = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hello"}]}
RESULTS: dict[str, object] = {}


def _pp2(plan):
    hw = plan.hardware.model_copy(update={"pipeline_parallel_size": 2, "hosts_per_replica": 2})
    return plan.model_copy(update={"name": "tiny-pp", "hardware": hw,
                                   "vllm": plan.vllm.model_copy(update={"pipeline_parallel_size": 2}),
                                   "runtime": plan.runtime.model_copy(update={"load_time_s": 300})})


@pytest.fixture(scope="module")
def group(deployed_site, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multinode")
    hosts = deployed_site["hosts"]
    # eth0 of a test host is selfhost-test-net (host to host); eth1 reaches the sentinel.
    site = site_variant(deployed_site, tmp, selfhost_private_addresses={h.name: h.ip for h in hosts},
                        selfhost_private_interface="eth0")
    plan = _pp2(deployed_site["plan"])
    plan_file = tmp / "plan.yml"
    plan.dump(plan_file)
    session = deployed_site["plan"].name
    for h in hosts:
        h.exec("docker", "stop", f"{session}-gateway", f"{session}-vllm", check=False)
    out = {"site": site, "cwd": tmp, "hosts": hosts, "ca": deployed_site["ca"], "bundle": tmp / "bundle",
           "plan_file": plan_file, "sentinel": deployed_site["sentinel"]}
    try:
        t0 = time.monotonic()
        res = selfhost_cli("deploy", plan_file, "-i", site, "--out", out["bundle"], "--yes", "--json", cwd=tmp,
                           timeout=1800)
        RESULTS["deploy_s"] = round(time.monotonic() - t0)
        print(f"\n[e2e] multi-node deploy (PP2 over 2 hosts): {RESULTS['deploy_s']}s, exit {res.returncode}",
              flush=True)
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-4000:]
        report = json.loads(res.stdout)
        out["report"] = report
        out["key"] = (report.get("api_keys") or {}).get(hosts[0].name)
        yield out
    finally:
        res = selfhost_cli("destroy", "-i", site, "--name", plan.name, "--yes", "--json", cwd=tmp, timeout=900)
        print(f"\n[e2e] multi-node destroy: exit {res.returncode}", flush=True)
        chains = [h.exec("sh", "-c", "iptables -S; ip6tables -S", check=False).stdout.decode() for h in hosts]
        for h in hosts:
            h.exec("docker", "start", f"{session}-vllm", f"{session}-gateway", check=False)
        for h in hosts:
            wait_healthy(deployed_site["ca"], h)
        print(f"\n[e2e] multi-node results: {json.dumps(RESULTS)}", flush=True)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert not any("SELFHOST-" in c for c in chains), f"destroy removes the jump and the chain: {chains}"


def test_render_lays_out_the_group(group):
    h1, h2 = group["hosts"]
    assert group["report"]["groups"] == [
        f"replica 1: {h1.name} (rank 0, {h1.ip}), {h2.name} (rank 1, {h2.ip}); master {h1.ip}:29500, "
        f"only {h1.name} behind its gateway"]
    hv = {h.name: yaml.safe_load((group["bundle"] / "inventory" / "host_vars" / f"{h.name}.yml").read_text())
          for h in (h1, h2)}
    assert hv[h2.name]["selfhost_server"]["argv"][-1] == "--headless"
    assert hv[h1.name]["selfhost_node"]["rank"] == 0 and hv[h2.name]["selfhost_node"]["master_addr"] == h1.ip


def test_the_group_answers_through_rank_0(group):
    h1, h2 = group["hosts"]
    status, body = gateway_request(group["ca"], h1, "/v1/chat/completions", key=group["key"], body=CHAT,
                                   timeout=300)
    RESULTS["chat"] = status
    assert status == 200 and body.get("choices"), body
    for h, rank in ((h1, "0"), (h2, "1")):
        inspect = json.loads(h.exec("docker", "inspect", "tiny-pp-vllm").stdout)[0]
        assert inspect["HostConfig"]["NetworkMode"] == "host"
        assert inspect["Config"]["Labels"]["org.selfhost.node-rank"] == rank
        assert inspect["State"]["Health"]["Status"] == "healthy"
    assert h2.exec("docker", "inspect", "tiny-pp-gateway", check=False).returncode != 0, "only rank 0 has a gateway"


def test_egress_probe_fails_from_both_ranks(group):
    s = group["sentinel"]
    probe = (ROOT / "playbooks" / "roles" / "selfhost_verify" / "files" / "egress_probe.py").read_text()
    target = f"{s.ip}:{s.port}"
    for h in group["hosts"]:
        res = h.exec("docker", "exec", "tiny-pp-vllm", "python3", "-c", probe, target, check=False)
        RESULTS[f"probe_{h.name}"] = res.stdout.decode().strip()
        assert res.returncode == 3 and res.stdout.startswith(b"blocked"), (h.name, res.returncode, res.stdout)
        image = json.loads(h.exec("docker", "inspect", "tiny-pp-vllm").stdout)[0]["Config"]["Image"]
        ctl = h.exec("docker", "run", "--rm", "--network", "bridge", "--entrypoint", "python3", image, "-c", probe,
                     target, check=False, timeout=120)
        assert ctl.returncode == 0 and ctl.stdout.startswith(b"reached"), (ctl.returncode, ctl.stdout, ctl.stderr)


def test_second_deploy_changes_nothing(group):
    changes: list = []
    t0 = time.monotonic()
    result = deployer.run(group["bundle"], on_event=print_changes(changes))
    RESULTS["noop_deploy_s"] = round(time.monotonic() - t0)
    assert result.ok, result.failed
    assert {h: s.changed for h, s in result.hosts.items()} == {h.name: 0 for h in group["hosts"]}, \
        [f"{e.host} {e.step}: {e.task}" for e in changes]
