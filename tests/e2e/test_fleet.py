"""One endpoint for a fleet, on the session's two test hosts (real nginx gateways, real vLLM CPU servers).

The module redeploys the session's deployment (same plan, same name, same servers: each vLLM start is paid
once) from a copy of the session site with `selfhost_fleet: true`, proves the fleet endpoint, and deploys the
session site again at the end, so the modules after it find the single-host gateways they expect (with the
fleet's key on every host: `deployed_site["keys"]` is updated).

  * 20 chat completions through ONE host's endpoint all succeed and both replicas served some
    (`vllm:request_success_total` read from each host's own /metrics);
  * one key works on both hosts; the other host's old key is gone;
  * with host 2's server stopped, a client loop through host 1 sees no failed request after the passive
    health check noticed (at most the first request of the window fails; with retries none does);
  * fleet-wide rotate-keys while a client loop runs through each host: no failed request (the clients switch
    to the new key shown at the start of the grace window, when old and new both work on both hosts); after
    it the old key is 401 on both hosts and the new one works on both.
"""
from __future__ import annotations

import json
import re
import threading
import time

import pytest

from tests.e2e.conftest import ClientLoop, gateway_request, selfhost_cli, selfhost_popen, site_variant, wait_healthy

pytestmark = pytest.mark.e2e

CHAT = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hello"}]}
RESULTS: dict[str, object] = {}


def _status(fleet, host, path, key, body=None, timeout=60) -> int:
    return gateway_request(fleet["ca"], host, path, key=key, body=body, timeout=timeout)[0]


def _served(fleet, host, key) -> float:
    """Requests this host's own vLLM finished (sum of vllm:request_success_total over its labels)."""
    import ssl
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(fleet["ca"]))
    req = urllib.request.Request(f"https://127.0.0.1:{host.https_port}/metrics",
                                 headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
        text = r.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$", text, re.MULTILINE))


@pytest.fixture(scope="module")
def fleet(deployed_site, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    hosts = deployed_site["hosts"]
    site = site_variant(deployed_site, tmp, selfhost_fleet=True, selfhost_fleet_peers={h.name: h.ip for h in hosts},
                        selfhost_fleet_fail_timeout_s=30)
    t0 = time.monotonic()
    res = selfhost_cli("deploy", deployed_site["plan_file"], "-i", site, "--out", tmp / "bundle", "--yes", "--json",
                       cwd=tmp, timeout=1500)
    RESULTS["fleet_deploy_s"] = round(time.monotonic() - t0)
    print(f"\n[e2e] fleet redeploy: {RESULTS['fleet_deploy_s']}s, exit {res.returncode}", flush=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    report = json.loads(res.stdout)
    first = hosts[0].name
    key = (report.get("api_keys") or {}).get(first) or deployed_site["keys"][first]
    old = dict(deployed_site["keys"])
    out = {"site": site, "cwd": tmp, "hosts": hosts, "ca": deployed_site["ca"], "key": key, "old": old,
           "vllm": f"{deployed_site['plan'].name}-vllm",
           "keys_file": f"{deployed_site['bundle'].vars.selfhost_gateway_dir}/api-keys.conf"}
    yield out
    # Put the session's single-host gateways back (the servers stay as they are); every host now holds the
    # fleet's key set, which is the key the later modules must use.
    try:
        hosts[1].exec("docker", "start", out["vllm"], check=False)
        res = selfhost_cli("deploy", deployed_site["plan_file"], "-i", deployed_site["site"], "--out",
                           tmp / "restore", "--yes", "--json", cwd=tmp, timeout=1500)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    finally:
        for h in hosts:
            deployed_site["keys"][h.name] = out["key"]
        print(f"\n[e2e] fleet results: {json.dumps(RESULTS)}", flush=True)


def test_one_key_for_the_fleet(fleet):
    h1, h2 = fleet["hosts"]
    for h in (h1, h2):
        assert _status(fleet, h, "/v1/models", fleet["key"]) == 200, f"{h.name}: the fleet key works here"
    if fleet["old"][h2.name] != fleet["key"]:
        assert _status(fleet, h2, "/v1/models", fleet["old"][h2.name]) == 401, "host 2's own key was replaced"
    assert _status(fleet, h1, "/v1/models", None) == 401


def test_twenty_completions_through_one_host_reach_both_replicas(fleet):
    h1, h2 = fleet["hosts"]
    before = {h.name: _served(fleet, h, fleet["key"]) for h in (h1, h2)}
    statuses = []
    for _ in range(20):  # sequential: least_conn ties go round robin
        statuses.append(_status(fleet, h1, "/v1/chat/completions", fleet["key"], CHAT, timeout=120))
    after = {h.name: _served(fleet, h, fleet["key"]) for h in (h1, h2)}
    served = {n: after[n] - before[n] for n in after}
    RESULTS["twenty_through_host1"] = {"statuses": sorted(set(statuses)), "served": served}
    print(f"\n[e2e] 20 completions through {h1.name}: statuses {sorted(set(statuses))}, served {served}", flush=True)
    assert statuses == [200] * 20
    assert all(v > 0 for v in served.values()), f"both replicas served some: {served}"
    assert sum(served.values()) >= 20


def test_failover_when_a_replica_stops(fleet):
    h1, h2 = fleet["hosts"]
    h2.exec("docker", "stop", fleet["vllm"])
    try:
        with ClientLoop(fleet["ca"], h1, fleet["key"], "/v1/chat/completions", CHAT, pause=0.1) as loop:
            time.sleep(25)
        results = loop.results
    finally:
        h2.exec("docker", "start", fleet["vllm"])
    bad = [i for i, r in enumerate(results) if r != 200]
    RESULTS["failover"] = {"requests": len(results), "failed": len(bad), "failed_at": bad[:5]}
    print(f"\n[e2e] failover ({h2.name}'s server stopped): {len(results)} requests through {h1.name}, "
          f"{len(bad)} failed {[results[i] for i in bad][:3]}", flush=True)
    assert len(results) >= 10
    assert bad == list(range(len(bad))) and len(bad) <= 1, \
        f"no failed request after the health check noticed: {[(i, results[i]) for i in bad][:10]}"
    wait_healthy(fleet["ca"], h2, timeout=400)


def test_fleet_wide_rotation_without_a_failed_request(fleet):
    """`rotate-keys` on the fleet, run as a user runs it, while a client loop goes through each host: the new
    key is shown once at the start of the grace window; at that moment the old and the new key both work on
    both hosts, and the clients switch to the new one; no request fails; after the grace, the old key is 401
    on both hosts and both hosts hold the same keys file."""
    h1, h2 = fleet["hosts"]
    wait_healthy(fleet["ca"], h2, timeout=400)
    old, grace = fleet["key"], 15
    shown: dict[str, str] = {}
    lines: list[str] = []
    window: dict[str, tuple[int, int]] = {}
    loops = [ClientLoop(fleet["ca"], h, old, "/v1/chat/completions", CHAT, pause=0.1) for h in (h1, h2)]
    switched_at: list[int] = []
    t0 = time.monotonic()
    with loops[0], loops[1]:
        time.sleep(1)
        proc = selfhost_popen("rotate-keys", "-i", fleet["site"], "--grace", grace, "--yes", cwd=fleet["cwd"])
        watchdog = threading.Timer(900, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                lines.append(line)
                m = re.match(r"^\s*(\S+)(?: \[[^\]]+\])?: ([0-9A-Za-z._~+/-]{16,})\s*$", line)  # "host [label]: key"
                if m and not switched_at:  # the keys block shown before the grace window
                    shown[m.group(1)] = m.group(2)
                if "switch your clients now" in line and shown and not switched_at:
                    new = shown[h1.name]
                    fleet["key"] = new  # from here on the fleet's key (the module's teardown hands it on)
                    window = {h.name: (_status(fleet, h, "/v1/models", old), _status(fleet, h, "/v1/models", new))
                              for h in (h1, h2)}
                    RESULTS["rotation_key_shown_s"] = round(time.monotonic() - t0, 1)
                    for loop in loops:  # the clients switch during the grace window
                        switched_at.append(len(loop.results))
                        loop.key = new
            rc = proc.wait(timeout=60)
        finally:
            watchdog.cancel()
        RESULTS["rotation_s"] = round(time.monotonic() - t0, 1)
        time.sleep(2)
    out = "".join(lines)
    assert rc == 0, out[-4000:]
    assert "rotate the fleet's one key set" in out
    assert set(shown) == {h1.name, h2.name} and len(set(shown.values())) == 1, f"one new key for the fleet: {out[-2000:]}"
    new = shown[h1.name]
    assert new != old
    # The grace window, seen from outside: both keys accepted on both hosts at the same moment.
    assert window == {h1.name: (200, 200), h2.name: (200, 200)}, window
    for loop, at in zip(loops, switched_at):
        RESULTS.setdefault("rotation_loops", []).append(
            {"requests": len(loop.results), "with_new_key": len(loop.results) - at, "statuses": sorted(set(loop.statuses)),
             "errors": len(loop.errors)})
        assert loop.results and all(r == 200 for r in loop.results), \
            f"no failed request: {[(i, r) for i, r in enumerate(loop.results) if r != 200][:10]}"
        assert at > 0 and len(loop.results) > at, "the loop ran with the old key, then with the new one"
    print(f"\n[e2e] fleet rotation: {RESULTS['rotation_s']}s, key shown at {RESULTS['rotation_key_shown_s']}s, "
          f"loops {RESULTS['rotation_loops']}", flush=True)
    files = set()
    for h in (h1, h2):
        assert _status(fleet, h, "/v1/models", old) == 401, f"{h.name}: the old key is retired"
        assert _status(fleet, h, "/v1/chat/completions", new, CHAT, timeout=120) == 200, f"{h.name}: the new key works"
        text = h.exec("cat", fleet["keys_file"]).stdout.decode()
        assert old not in text and new in text
        files.add(text)
        assert h.exec("test", "-e", fleet["keys_file"] + ".new", check=False).returncode != 0, \
            "the first host's copy of the new key is deleted"
    assert len(files) == 1, "one key set: the same keys file on every host"
