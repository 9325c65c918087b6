"""The rendered fleet gateway in real nginx (the e2e gateway image), two "hosts" on one Docker engine.

Each host is a gateway container with its own stand-in server (a tiny HTTP app answering who served the
request) reachable by the server's container name on that host's own internal network only, as on a real
host; the gateways reach each other's peer listener over a shared network at fixed addresses (the site's
`selfhost_fleet_peers`). Proves with nginx itself: requests through one endpoint reach both replicas, a
stopped replica (or a whole stopped peer gateway) costs no failed request, the peer listener wants the
fleet secret (a client API key is not enough), and it serves only its own host's replica (no loop).
The real-vLLM version is tests/e2e/test_fleet.py.
"""
from __future__ import annotations

import collections
import ipaddress
import json
import random
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.unit.test_render import CASES, _site, _weights
from toolkit.render.bundle import render
from toolkit.render.site import load_site

GATEWAY_IMAGE, APP_IMAGE = "selfhost-test/gateway:1", "selfhost-test/host:1"
APP = r'''
import http.server, json, os, sys
NAME = os.environ["REPLICA"]
class H(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        body = json.dumps({"served_by": NAME, "auth": self.headers.get("Authorization") or ""}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    do_GET = do_POST = _answer
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), H).serve_forever()
'''


def _docker(*args, check=True, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def _have(ref: str) -> bool:
    return shutil.which("docker") is not None and _docker("image", "inspect", ref, check=False).returncode == 0


pytestmark = pytest.mark.skipif(not (_have(GATEWAY_IMAGE) and _have(APP_IMAGE)),
                                reason="needs Docker and the e2e gateway/host images (python -m tests.e2e.infra build)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleetgw")
    tag = uuid.uuid4().hex[:8]
    subnet = ipaddress.ip_network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
    addr = {"gw-1": str(subnet[11]), "gw-2": str(subnet[12])}
    hosts = {h: {"ansible_host": f"{h}.lab.internal"} for h in addr}
    site = _site(tmp, hosts, "ansible_user: deploy\nselfhost_fleet: true\nselfhost_fleet_tries: 2\n"
                 + "selfhost_fleet_peers: " + json.dumps(addr) + "\n")
    plan = CASES["cpu-tiny"]()
    bundle = render(plan, load_site(site), tmp / "out", weights_source=_weights(tmp))
    dv = bundle.vars
    shared = tmp / "shared"
    script = Path(__file__).parents[2] / "playbooks" / "roles" / "selfhost_gateway" / "files" / "fleet_keys.py"
    subprocess.run(["python3", str(script), str(shared)], check=True, capture_output=True)
    key = next(line.split()[1].strip('"') for line in (shared / "api-keys.conf").read_text().splitlines()
               if line.strip().startswith('"Bearer'))
    secret = next(line.split()[1].strip('"') for line in (shared / "fleet-secret.conf").read_text().splitlines()
                  if line.strip().startswith('"Bearer'))
    fleet_net, made = f"selfhost-fleetgw-{tag}", {"nets": [], "ctrs": []}
    try:
        _docker("network", "create", "--subnet", str(subnet), fleet_net)
        made["nets"].append(fleet_net)
        for h in addr:
            gw = _gateway_dir(tmp, h, bundle, shared, site)
            internal = f"selfhost-fleetgw-{tag}-{h}"
            _docker("network", "create", "--internal", internal)
            made["nets"].append(internal)
            app = f"selfhost-fleetgw-{tag}-{h}-app"
            _docker("run", "-d", "--name", app, "--network", internal, "--network-alias", dv.selfhost_vllm_container,
                    "-e", f"REPLICA={h}", "--entrypoint", "python3", APP_IMAGE, "-c", APP)
            made["ctrs"].append(app)
            name = f"selfhost-fleetgw-{tag}-{h}"
            _docker("create", "--name", name, "--network", fleet_net, "--ip", addr[h],
                    "-v", f"{gw}:{dv.selfhost_gateway_mount}:ro", GATEWAY_IMAGE, *dv.selfhost_gateway_argv)
            made["ctrs"].append(name)
            _docker("network", "connect", internal, name)
            _docker("start", name)
        yield {"tag": tag, "key": key, "secret": secret, "addr": addr, "dv": dv}
    finally:
        for c in made["ctrs"]:
            _docker("rm", "-f", c, check=False)
        for n in made["nets"]:
            _docker("network", "rm", n, check=False)


def _gw(lab, h) -> str:
    return f"selfhost-fleetgw-{lab['tag']}-{h}"


def _requests(lab, via: str, n: int, *, url="https://127.0.0.1/v1/chat/completions", auth=None) -> list[str]:
    """n POSTs with curl inside gateway `via`; each line is `STATUS BODY`."""
    auth = auth or f"Bearer {lab['key']}"
    loop = (f'for i in $(seq {n}); do curl -sk -o /tmp/b -w "%{{http_code}} " -X POST -H "Authorization: {auth}" '
            f"-H 'Content-Type: application/json' -d '{{}}' {url}; cat /tmp/b; echo; done")
    return [ln for ln in _docker("exec", _gw(lab, via), "sh", "-c", loop, timeout=300).stdout.splitlines() if ln.strip()]


def _tally(lines: list[str]) -> tuple[collections.Counter, list[str]]:
    served, bad = collections.Counter(), []
    for line in lines:
        status, _, body = line.partition(" ")
        if status != "200":
            bad.append(line)
            continue
        served[json.loads(body)["served_by"]] += 1
    return served, bad


def _wait_up(lab):
    import time
    for _ in range(60):
        if all(_docker("exec", _gw(lab, h), "curl", "-sk", "-o", "/dev/null", "https://127.0.0.1/_gateway/health",
                       check=False).returncode == 0 for h in lab["addr"]):
            return
        time.sleep(0.5)
    raise AssertionError("gateways did not start: " + _docker("logs", _gw(lab, "gw-1"), check=False).stderr[-2000:])


def _gateway_dir(tmp: Path, h: str, bundle, shared: Path, site: Path) -> Path:
    """Host h's gateway directory as the role lays it out: the bundle's nginx.conf, the fleet's keys and peer
    secret, the CA and h's certificate; world-readable (nginx's workers read it in the container)."""
    gw = tmp / h
    (gw / "tls").mkdir(parents=True)
    shutil.copy(bundle.path / "files" / "gateway" / "nginx.conf", gw / "nginx.conf")
    for f in ("api-keys.conf", "fleet-secret.conf"):
        shutil.copy(shared / f, gw / f)
    shutil.copy(site / "pki" / "ca.crt", gw / "tls" / "ca.crt")
    shutil.copy(site / "pki" / "hosts" / f"{h}.crt", gw / "tls" / "server.crt")
    shutil.copy(site / "pki" / "hosts" / f"{h}.key", gw / "tls" / "server.key")
    for p in [gw, *gw.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return gw


def test_one_endpoint_reaches_both_replicas(lab):
    _wait_up(lab)
    served, bad = _tally(_requests(lab, "gw-1", 20))
    print(f"\n[fleet-gw] 20 through gw-1: {dict(served)}, failed {len(bad)}")
    assert not bad and sum(served.values()) == 20
    assert served["gw-1"] > 0 and served["gw-2"] > 0, served


def test_peer_listener_wants_the_fleet_secret_and_serves_only_its_own_replica(lab):
    _wait_up(lab)
    peer = f"https://{lab['addr']['gw-2']}:{lab['dv'].selfhost_fleet.port}/v1/chat/completions"
    statuses = [ln.split()[0] for ln in _requests(lab, "gw-1", 2, url=peer)]
    assert statuses == ["401", "401"], "a client API key does not open the peer listener"
    statuses = [ln.split()[0] for ln in _requests(lab, "gw-1", 2, url=peer, auth="Bearer nope")]
    assert statuses == ["401", "401"]
    served, bad = _tally(_requests(lab, "gw-1", 10, url=peer, auth=f"Bearer {lab['secret']}"))
    assert not bad and served == {"gw-2": 10}, "the peer listener proxies to its own server only: no second hop"
    lines = _requests(lab, "gw-1", 1)
    assert json.loads(lines[0].partition(" ")[2])["auth"] == "", "neither the key nor the secret reaches the server"


def test_a_stopped_replica_costs_no_failed_request(lab):
    _wait_up(lab)
    app2 = f"selfhost-fleetgw-{lab['tag']}-gw-2-app"
    _docker("stop", "-t", "0", app2)
    try:
        served, bad = _tally(_requests(lab, "gw-1", 20))
        print(f"\n[fleet-gw] gw-2's server stopped, 20 through gw-1: {dict(served)}, failed {len(bad)}")
        assert not bad, bad[:3]
        assert served == {"gw-1": 20}
        served, bad = _tally(_requests(lab, "gw-2", 10))
        print(f"[fleet-gw] and 10 through gw-2 (its own server down): {dict(served)}, failed {len(bad)}")
        assert not bad and served == {"gw-1": 10}, "a host whose server is down still serves through its peers"
    finally:
        _docker("start", app2)


def test_a_stopped_peer_gateway_costs_no_failed_request(lab):
    _wait_up(lab)
    _docker("stop", "-t", "0", _gw(lab, "gw-2"))
    try:
        served, bad = _tally(_requests(lab, "gw-1", 20))
        print(f"\n[fleet-gw] gw-2 down, 20 through gw-1: {dict(served)}, failed {len(bad)}")
        assert not bad and served == {"gw-1": 20}
    finally:
        _docker("start", _gw(lab, "gw-2"))


# ---------------------------------------------------------------- a fleet over multi-node groups

@pytest.fixture(scope="module")
def groups_lab(tmp_path_factory):
    """4 hosts, a 2-host plan: 2 groups, whose rank-0 hosts (node-1, node-3) are the fleet. Each rank-0 "host" is
    one network namespace (a holder container at the host's private address), shared like the host network by
    the stand-in server and the gateway (`--network container:`): the gateway reaches the server on loopback as
    the rendered config says. Headless ranks run nothing (no gateway, not members)."""
    from tests.unit.test_multinode_render import _pp2

    tmp = tmp_path_factory.mktemp("fleetgroups")
    tag = uuid.uuid4().hex[:8]
    subnet = ipaddress.ip_network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
    private = {f"node-{i}": str(subnet[10 + i]) for i in range(1, 5)}
    hosts = {h: {"ansible_host": f"{h}.lab.internal"} for h in private}
    site = _site(tmp, hosts, "ansible_user: deploy\nselfhost_fleet: true\nselfhost_fleet_tries: 2\n"
                 "selfhost_private_interface: eth0\nselfhost_private_addresses: " + json.dumps(private) + "\n")
    bundle = render(_pp2(), load_site(site), tmp / "out", weights_source=_weights(tmp))
    dv = bundle.vars
    members = {m.name: m.address for m in dv.selfhost_fleet.members}
    assert members == {"node-1": private["node-1"], "node-3": private["node-3"]}
    shared = tmp / "shared"
    script = Path(__file__).parents[2] / "playbooks" / "roles" / "selfhost_gateway" / "files" / "fleet_keys.py"
    subprocess.run(["python3", str(script), str(shared)], check=True, capture_output=True)
    key = next(line.split()[1].strip('"') for line in (shared / "api-keys.conf").read_text().splitlines()
               if line.strip().startswith('"Bearer'))
    net, made = f"selfhost-fleetgroups-{tag}", {"nets": [], "ctrs": []}
    try:
        _docker("network", "create", "--subnet", str(subnet), net)
        made["nets"].append(net)
        for h, address in members.items():
            gw = _gateway_dir(tmp, h, bundle, shared, site)
            host = f"selfhost-fleetgw-{tag}-{h}-host"
            _docker("run", "-d", "--name", host, "--network", net, "--ip", address, "--entrypoint", "sleep",
                    APP_IMAGE, "infinity")
            made["ctrs"].append(host)
            app = f"selfhost-fleetgw-{tag}-{h}-app"
            _docker("run", "-d", "--name", app, "--network", f"container:{host}", "-e", f"REPLICA={h}",
                    "--entrypoint", "python3", APP_IMAGE, "-c", APP)
            made["ctrs"].append(app)
            name = f"selfhost-fleetgw-{tag}-{h}"
            _docker("run", "-d", "--name", name, "--network", f"container:{host}",
                    "-v", f"{gw}:{dv.selfhost_gateway_mount}:ro", GATEWAY_IMAGE, *dv.selfhost_gateway_argv)
            made["ctrs"].append(name)
        yield {"tag": tag, "key": key, "addr": members, "dv": dv}
    finally:
        for c in reversed(made["ctrs"]):
            _docker("rm", "-f", c, check=False)
        for n in made["nets"]:
            _docker("network", "rm", n, check=False)


def test_groups_one_endpoint_reaches_both_groups_rank_0(groups_lab):
    lab = groups_lab
    _wait_up(lab)
    for via, other in (("node-1", "node-3"), ("node-3", "node-1")):
        served, bad = _tally(_requests(lab, via, 20))
        print(f"\n[fleet-gw] groups: 20 through {via}: {dict(served)}, failed {len(bad)}")
        assert not bad and sum(served.values()) == 20
        assert served[via] > 0 and served[other] > 0, served


def test_groups_a_stopped_group_costs_no_failed_request(groups_lab):
    """A group being upgraded (its rank 0's server down, its gateway up) while the other serves: no request through
    either rank-0 gateway fails."""
    lab = groups_lab
    _wait_up(lab)
    app3 = f"selfhost-fleetgw-{lab['tag']}-node-3-app"
    _docker("stop", "-t", "0", app3)
    try:
        for via in ("node-1", "node-3"):
            served, bad = _tally(_requests(lab, via, 10))
            print(f"\n[fleet-gw] groups: node-3's server down, 10 through {via}: {dict(served)}, failed {len(bad)}")
            assert not bad and served == {"node-1": 10}
    finally:
        _docker("start", app3)
