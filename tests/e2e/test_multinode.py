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

from tests.e2e.conftest import ROOT, gateway_request, print_changes, selfhost_cli, site_variant, wait_healthy
from toolkit.deploy import runner as deployer
from toolkit.render.bundle import load_vars

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
    # load_vars: the guard's source in the entrypoint is written `!unsafe` (Ansible must not template it).
    hv = {h.name: load_vars((group["bundle"] / "inventory" / "host_vars" / f"{h.name}.yml").read_text())
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


def test_a_dead_rank_restarts_the_group_by_itself(group):
    """The headless rank's server dies (its container's PID 1 killed, as in a crash: `docker kill` would be a
    deliberate stop, which Docker's restart policy honours). Docker starts it again; the group guard on rank 0
    sees it come back with no generation and restarts rank 0 too; the two meet in a new generation and rank 0
    answers through its gateway again, with no selfhost command. Each container restarted once (no loop)."""
    h1, h2 = group["hosts"]

    def restarts(h) -> int:
        return json.loads(h.exec("docker", "inspect", "tiny-pp-vllm").stdout)[0]["RestartCount"]

    before = [restarts(h) for h in (h1, h2)]
    t0 = time.monotonic()
    h2.exec("sh", "-c", "kill -9 $(docker inspect -f '{{.State.Pid}}' tiny-pp-vllm)")
    status = None
    while time.monotonic() - t0 < 600:
        try:
            status = gateway_request(group["ca"], h1, "/v1/chat/completions", key=group["key"], body=CHAT,
                                     timeout=30)[0]
        except Exception as exc:  # the gateway's upstream restarting
            status = repr(exc)
        if status == 200 and restarts(h1) > before[0]:
            break
        time.sleep(2)
    RESULTS["group_recovery_s"] = round(time.monotonic() - t0)
    print(f"\n[e2e] headless rank killed: the group answers again after {RESULTS['group_recovery_s']}s "
          f"(restarts {before} -> {[restarts(h) for h in (h1, h2)]})", flush=True)
    assert status == 200, f"no answer through rank 0's gateway {RESULTS['group_recovery_s']}s after the kill: {status}"
    assert [restarts(h) for h in (h1, h2)] == [before[0] + 1, before[1] + 1], "one restart each, no loop"
    logs = h1.exec("sh", "-c", "docker logs tiny-pp-vllm 2>&1 | grep selfhost-guard").stdout.decode()
    assert "group restart: rank 1 restarted" in logs, logs[-2000:]
    t1 = time.monotonic()
    while time.monotonic() - t1 < 180:  # the headless rank's health check runs every 10 s
        health = [json.loads(h.exec("docker", "inspect", "tiny-pp-vllm").stdout)[0]["State"]["Health"]["Status"]
                  for h in (h1, h2)]
        if health == ["healthy", "healthy"]:
            break
        time.sleep(3)
    assert health == ["healthy", "healthy"], health


def test_second_deploy_changes_nothing(group):
    changes: list = []
    t0 = time.monotonic()
    result = deployer.run(group["bundle"], on_event=print_changes(changes))
    RESULTS["noop_deploy_s"] = round(time.monotonic() - t0)
    assert result.ok, result.failed
    assert {h: s.changed for h, s in result.hosts.items()} == {h.name: 0 for h in group["hosts"]}, \
        [f"{e.host} {e.step}: {e.task}" for e in changes]


def _probe(h, target: str):
    probe = (ROOT / "playbooks" / "roles" / "selfhost_verify" / "files" / "egress_probe.py").read_text()
    return h.exec("docker", "exec", "tiny-pp-vllm", "python3", "-c", probe, target, check=False)


def test_egress_lock_comes_back_like_at_boot(group):
    """An emulated reboot of the firewall: the kernel forgets the chain (dropped here, with the server running),
    the server then has a route out; the boot script the deploy installed (SysV init on the test hosts,
    X-Start-Before: docker) restores it, and the probe fails again. Boot ordering itself is not exercised."""
    s, (h1, h2) = group["sentinel"], group["hosts"]
    target = f"{s.ip}:{s.port}"
    for h in (h1, h2):
        h.exec("test", "-s", "/etc/selfhost/egress/tiny-pp.iptables")
        links = h.exec("sh", "-c", "ls /etc/rc2.d | grep selfhost-egress", check=False).stdout.decode()
        assert "selfhost-egress" in links, f"{h.name}: boot script not enabled ({links!r})"
    uid = json.loads(h2.exec("docker", "inspect", "tiny-pp-vllm").stdout)[0]["Config"]["User"].split(":")[0]
    chain = f"SELFHOST-{uid}"
    try:
        h2.exec("sh", "-c", f"iptables -w -D OUTPUT -m owner --uid-owner {uid} -j {chain}; "
                            f"iptables -w -F {chain}; iptables -w -X {chain}")
        opened = _probe(h2, target)
        RESULTS["probe_after_flush"] = opened.stdout.decode().strip()
        assert opened.returncode == 0 and opened.stdout.startswith(b"reached"), \
            "without the chain the server has a route out (the reboot gap this closes)"
    finally:
        t0 = time.monotonic()
        boot = h2.exec("/etc/init.d/selfhost-egress", "start", check=False)
        RESULTS["boot_restore_s"] = round(time.monotonic() - t0, 2)
    assert boot.returncode == 0, boot.stdout + boot.stderr
    res = _probe(h2, target)
    RESULTS["probe_after_boot_restore"] = res.stdout.decode().strip()
    assert res.returncode == 3 and res.stdout.startswith(b"blocked"), (res.returncode, res.stdout)
    h2.exec("/etc/init.d/selfhost-egress", "start")  # again: still one jump
    jumps = h2.exec("iptables", "-w", "-S", "OUTPUT").stdout.decode().count(f"-j {chain}")
    assert jumps == 1, jumps


def test_rollback_moves_the_whole_group(group):
    """A second release on both ranks, then `selfhost rollback`: --host with one rank is refused naming the whole
    replica; the preview shows the replica; the rollback stops both ranks, starts each rank's previous release
    together and verifies rank 0 through its gateway."""
    from toolkit.plan.model import Plan

    h1, h2 = group["hosts"]
    site, tmp = group["site"], group["cwd"]
    plan = Plan.load(group["plan_file"])
    old = plan.vllm.max_num_seqs
    new = old // 2 if old > 1 else 2
    plan2 = plan.model_copy(update={"vllm": plan.vllm.model_copy(update={"max_num_seqs": new})})
    plan2_file = tmp / "plan2.yml"
    plan2.dump(plan2_file)
    t0 = time.monotonic()
    res = selfhost_cli("deploy", plan2_file, "-i", site, "--out", tmp / "bundle2", "--yes", "--json", cwd=tmp,
                       timeout=1800)
    RESULTS["second_release_deploy_s"] = round(time.monotonic() - t0)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-4000:]

    def seqs(h) -> str:
        argv = json.loads(h.exec("docker", "inspect", "tiny-pp-vllm").stdout)[0]["Config"]["Cmd"]
        return argv[argv.index("--max-num-seqs") + 1]

    assert [seqs(h) for h in (h1, h2)] == [str(new)] * 2

    part = selfhost_cli("rollback", "-i", site, "--name", "tiny-pp", "--host", h2.name, "--dry-run", cwd=tmp,
                        timeout=300)
    assert part.returncode != 0 and f"--host {h1.name},{h2.name}" in part.stdout + part.stderr, \
        part.stdout[-2000:] + part.stderr[-2000:]

    preview = selfhost_cli("rollback", "-i", site, "--name", "tiny-pp", "--dry-run", "--json", cwd=tmp, timeout=300)
    assert preview.returncode == 0, preview.stdout[-3000:] + preview.stderr[-3000:]
    doc = json.loads(preview.stdout)
    assert doc["groups"] == [f"replica 1: {h1.name} (rank 0), {h2.name} (rank 1) roll back together: every rank "
                             f"stops, each starts its own release, then {h1.name} (rank 0) must be healthy and verified"]
    assert doc["operations"][0]["extravars"]["selfhost_rollback_serial"] == 2

    t0 = time.monotonic()
    res = selfhost_cli("rollback", "-i", site, "--name", "tiny-pp", "--yes", "--json", cwd=tmp, timeout=1800)
    RESULTS["group_rollback_s"] = round(time.monotonic() - t0)
    print(f"\n[e2e] multi-node group rollback: {RESULTS['group_rollback_s']}s, exit {res.returncode}", flush=True)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-4000:]
    assert [seqs(h) for h in (h1, h2)] == [str(old)] * 2, "both ranks run the previous release again"
    for h in (h1, h2):
        state = json.loads(h.exec("docker", "inspect", "tiny-pp-vllm").stdout)[0]["State"]
        assert state["Health"]["Status"] == "healthy", (h.name, state)
    status, body = gateway_request(group["ca"], h1, "/v1/chat/completions", key=group["key"], body=CHAT,
                                   timeout=300)
    RESULTS["chat_after_rollback"] = status
    assert status == 200 and body.get("choices"), body
