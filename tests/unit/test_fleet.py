"""One endpoint for a fleet (site `selfhost_fleet: true`): site validation and the rendered gateway config.

Every host's nginx is an equal fleet endpoint: an `upstream` over every host's peer listener (policy, passive
health checks, bounded retries), and a peer listener that proxies only to its own host's server (no loop).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_render import CASES, _site, _weights
from toolkit.errors import ConfigError
from toolkit.render.bundle import FLEET_SAN, load_vars, render
from toolkit.render.site import load_site

HOSTS = {"gpu-01": {"ansible_host": "203.0.113.11"}, "gpu-02": {"ansible_host": "203.0.113.12"}}
FLEET = "ansible_user: deploy\nselfhost_fleet: true\n"


def _render(tmp: Path, group_vars: str = FLEET, hosts: dict = HOSTS):
    plan = CASES["cpu-tiny"]()
    bundle = render(plan, load_site(_site(tmp, hosts, group_vars)), tmp / "out", weights_source=_weights(tmp))
    return bundle, (bundle.path / "files" / "gateway" / "nginx.conf").read_text()


def _blocks(conf: str, head: str) -> list[str]:
    """Bodies of every `head {` block (brace-matched) in an nginx config."""
    out = []
    for m in re.finditer(re.escape(head) + r"\s*\{", conf):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(conf[i], 0)
            i += 1
        out.append(conf[m.end():i - 1])
    return out


def _servers(conf: str) -> dict[str, str]:
    return {re.search(r"listen (\d+)", b).group(1): b for b in _blocks(conf, "server")}


# ---------------------------------------------------------------- default: nothing changes

def test_fleet_off_keeps_the_single_host_gateway(tmp_path):
    bundle, conf = _render(tmp_path, "ansible_user: deploy\n")
    assert not _blocks(conf, "upstream selfhost_fleet") and "fleet" not in conf and list(_servers(conf)) == ["443"]
    assert bundle.vars.selfhost_fleet is None
    assert "selfhost_fleet" not in load_vars((bundle.path / "env" / "extravars").read_text())


# ---------------------------------------------------------------- the rendered fleet gateway

def test_fleet_upstream_members_policy_and_health_checks(tmp_path):
    bundle, conf = _render(tmp_path, FLEET + "selfhost_fleet_peers: {gpu-01: 10.0.0.11, gpu-02: 10.0.0.12}\n"
                                             "selfhost_fleet_max_fails: 2\nselfhost_fleet_fail_timeout_s: 7\n")
    [up] = _blocks(conf, "upstream selfhost_fleet")
    servers = re.findall(r"^\s*server (\S+) (.*);", up, re.MULTILINE)
    assert servers == [("10.0.0.11:8444", "max_fails=2 fail_timeout=7s"),
                       ("10.0.0.12:8444", "max_fails=2 fail_timeout=7s")], "every replica, this host's own included"
    assert re.search(r"^\s*least_conn;", up, re.MULTILINE), "least_conn is the default policy"
    fleet = bundle.vars.selfhost_fleet
    assert fleet.first_host == "gpu-01" and fleet.port == 8444 and fleet.ssl_name == FLEET_SAN
    extravars = load_vars((bundle.path / "env" / "extravars").read_text())
    assert extravars["selfhost_fleet"]["members"][1] == {"name": "gpu-02", "address": "10.0.0.12"}


def test_fleet_peers_default_to_the_inventory_address(tmp_path):
    _, conf = _render(tmp_path)
    [up] = _blocks(conf, "upstream selfhost_fleet")
    assert re.findall(r"server (\S+):8444", up) == ["203.0.113.11", "203.0.113.12"]


@pytest.mark.parametrize("policy, line", [("least_conn", "least_conn;"), ("round_robin", None),
                                          ("hash", "hash $http_x_session_id consistent;")])
def test_fleet_policy_is_a_site_setting(policy, line, tmp_path):
    _, conf = _render(tmp_path, FLEET + f"selfhost_fleet_policy: {policy}\n")
    [up] = _blocks(conf, "upstream selfhost_fleet")
    directives = [d.strip() for d in up.split(";") if d.strip() and not d.strip().startswith(("server", "keepalive", "#"))]
    assert directives == ([line.rstrip(";")] if line else []), "round robin is nginx's default: no directive"


def test_fleet_hash_header_names_the_nginx_variable(tmp_path):
    _, conf = _render(tmp_path, FLEET + "selfhost_fleet_policy: hash\nselfhost_fleet_hash_header: X-Tenant-Id\n")
    assert "hash $http_x_tenant_id consistent;" in conf


def test_public_listener_retries_on_the_next_replica_with_tls_and_the_fleet_secret(tmp_path):
    _, conf = _render(tmp_path, FLEET + "selfhost_fleet_tries: 2\n")
    public = _servers(conf)["443"]
    [loc] = [b for b in _blocks(public, "location /")]
    assert "proxy_pass https://selfhost_fleet;" in loc
    assert "proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;" in loc
    assert "proxy_next_upstream_tries 2;" in loc and "proxy_next_upstream_timeout" in loc
    assert "proxy_ssl_verify on;" in loc and f"proxy_ssl_name {FLEET_SAN};" in loc
    assert "proxy_ssl_trusted_certificate /etc/selfhost/gateway/tls/ca.crt;" in loc
    assert "proxy_set_header Authorization $selfhost_fleet_auth;" in loc, "the client key never leaves; the secret does"
    assert loc.index("$selfhost_caller = \"\"") < loc.index("proxy_pass"), "the API key is checked first"
    # A location that sets one header inherits none: all of them are repeated.
    for header in ("Connection", "Host", "X-Forwarded-For", "X-Forwarded-Proto"):
        assert f"proxy_set_header {header} " in loc
    [metrics] = _blocks(public, "location = /metrics")
    assert "proxy_pass $selfhost_upstream;" in metrics, "metrics are this host's own"
    [health] = _blocks(public, "location = /health")
    assert "proxy_pass $selfhost_upstream;" in health


def test_peer_listener_proxies_only_to_its_own_server(tmp_path):
    bundle, conf = _render(tmp_path)
    peer = _servers(conf)["8444"]
    assert "listen 8444 ssl;" in peer and "selfhost_fleet;" not in peer.replace("$selfhost_fleet_peer_ok", "")
    assert "https://selfhost_fleet" not in peer, "no second hop: a request cannot loop between gateways"
    assert f"set $selfhost_upstream http://{bundle.vars.selfhost_vllm_container}:{bundle.vars.selfhost_vllm_port};" in peer
    [loc] = _blocks(peer, "location /")
    assert "if ($selfhost_fleet_peer_ok != 1)" in loc and "return 401" in loc
    assert loc.strip().endswith("proxy_pass $selfhost_upstream;")
    assert 'proxy_set_header Authorization "";' in peer, "the fleet secret stops at the peer gateway"
    assert "include /etc/selfhost/gateway/fleet-secret.conf;" in conf
    assert not re.search(r"[0-9a-f]{64}", conf), "no key or secret in the bundle"


def test_fleet_host_certificates_carry_the_fleet_name(tmp_path):
    from cryptography import x509

    _render(tmp_path)
    for host in HOSTS:
        cert = x509.load_pem_x509_certificate((tmp_path / "site" / "pki" / "hosts" / f"{host}.crt").read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert FLEET_SAN in sans.get_values_for_type(x509.DNSName)


# ---------------------------------------------------------------- site validation

@pytest.mark.parametrize("setting, needle", [
    ("selfhost_fleet_policy: random", "selfhost_fleet_policy"),
    ("selfhost_fleet_hash_header: 'X Session'", "header name"),
    ("selfhost_fleet_hash_header: 'x;evil'", "header name"),
    ("selfhost_fleet_port: 443", "differ from selfhost_gateway_port"),
    ("selfhost_fleet_port: 70000", "1 to 65535"),
    ("selfhost_fleet_tries: 0", "1 to 16"),
    ("selfhost_fleet_max_fails: 99", "1 to 16"),
    ("selfhost_fleet_fail_timeout_s: 0", "1 to 3600"),
    ("selfhost_fleet_peers: {gpu-01: '-oProxyCommand'}", "neither an IP address"),
    ("selfhost_fleet_peers: {gpu-01: '10.0.0.1; evil'}", "neither an IP address"),
    ("selfhost_fleet_peers: {gpu-09: 10.0.0.9}", "not in the inventory"),
])
def test_fleet_settings_are_checked(setting, needle, tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_site(_site(tmp_path, HOSTS, FLEET + setting + "\n"))
    assert needle in str(exc.value.message) + str(getattr(exc.value, "fix", ""))


# ---------------------------------------------------------------- nginx itself accepts it

def _gateway_image() -> str | None:
    if not shutil.which("docker"):
        return None
    for ref in ("selfhost-test/gateway:1", "nginx:1.27"):
        if subprocess.run(["docker", "image", "inspect", ref], capture_output=True, check=False).returncode == 0:
            return ref
    return None


@pytest.mark.parametrize("policy", ["least_conn", "round_robin", "hash"])
def test_nginx_accepts_the_fleet_config(policy, tmp_path):
    """`nginx -t` in the gateway image, with the files the playbook puts beside it (keys made like fleet_keys.py)."""
    image = _gateway_image()
    if image is None:
        pytest.skip("no docker or gateway image here")
    bundle, _ = _render(tmp_path, FLEET + f"selfhost_fleet_policy: {policy}\n")
    gw = tmp_path / "gw"
    (gw / "tls").mkdir(parents=True)
    shutil.copy(bundle.path / "files" / "gateway" / "nginx.conf", gw / "nginx.conf")
    pki = tmp_path / "site" / "pki"
    shutil.copy(pki / "ca.crt", gw / "tls" / "ca.crt")
    shutil.copy(pki / "hosts" / "gpu-01.crt", gw / "tls" / "server.crt")
    shutil.copy(pki / "hosts" / "gpu-01.key", gw / "tls" / "server.key")
    script = Path(__file__).parents[2] / "playbooks" / "roles" / "selfhost_gateway" / "files" / "fleet_keys.py"
    subprocess.run(["python3", str(script), str(gw)], check=True, capture_output=True)
    for p in gw.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    res = subprocess.run(["docker", "run", "--rm", "-v", f"{gw}:/etc/selfhost/gateway:ro", image,
                          "nginx", "-t", "-c", "/etc/selfhost/gateway/nginx.conf"], capture_output=True, text=True, check=False,
                         timeout=120)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------- `selfhost status`: the fleet view

def test_status_fleet_view_counts_healthy_replicas_and_where_traffic_went(tmp_path):
    from toolkit.operate import status as st

    def host(name, finished, ok=True):
        h = st.HostStatus(host=name, state="running", health="healthy" if ok else "unhealthy",
                          gateway_state="running", gateway_health="healthy")
        h.metrics = None if finished is None else st.shape_metrics(
            {}, st.parse_prometheus(f'vllm:request_success_total{{finished_reason="stop"}} {finished}\n'), None)
        return h

    view = st.fleet_view([host("gpu-01", 15), host("gpu-02", 5, ok=False), host("gpu-03", None)])
    assert (view.healthy, view.total) == (2, 3), "healthy is the container state; metrics only say where traffic went"
    assert view.served == {"gpu-01": 15.0, "gpu-02": 5.0, "gpu-03": None}
    assert view.share_pct == {"gpu-01": 75.0, "gpu-02": 25.0, "gpu-03": None}
    bundle, _ = _render(tmp_path)
    assert st.is_fleet(bundle.path)
    plain, _ = _render(tmp_path / "plain", "ansible_user: deploy\n")
    assert not st.is_fleet(plain.path)


# ---------------------------------------------------------------- `selfhost rotate-keys`: one key set, every host

def test_ops_bundle_carries_the_same_fleet_value_as_the_plan_bundle(tmp_path):
    """rotate-keys runs the plan-less ops bundle: the gateway role finds the fleet there (first host, members)."""
    from toolkit.operate.releases import ops_bundle

    bundle, _ = _render(tmp_path)
    site = load_site(tmp_path / "site")
    ops = load_vars((ops_bundle(site, tmp_path / "ops") / "env" / "extravars").read_text())
    plan = load_vars((bundle.path / "env" / "extravars").read_text())
    assert ops["selfhost_fleet"] == plan["selfhost_fleet"] and ops["selfhost_fleet"]["first_host"] == "gpu-01"
    plain = load_site(_site(tmp_path / "plain", HOSTS, "ansible_user: deploy\n"))
    assert "selfhost_fleet" not in load_vars((ops_bundle(plain, tmp_path / "ops2") / "env" / "extravars").read_text())


def _rotate_cli(monkeypatch, tmp_path, *args):
    import typer
    from typer.testing import CliRunner

    from toolkit.commands import rotate_keys
    from toolkit.deploy import runner

    site = load_site(_site(tmp_path, HOSTS, FLEET))
    infos = {h: {"tiny": {"current": {"release": "r1"}}} for h in HOSTS}
    monkeypatch.setattr(runner, "run", lambda *a, **kw: (_ for _ in ()).throw(AssertionError("ran a playbook")))
    monkeypatch.setattr(rotate_keys, "ops_setup", lambda *a, **kw: (site, tmp_path, {"id": "r"}, infos, "tiny"))
    app = typer.Typer()
    rotate_keys.register(app)
    app.command("noop", hidden=True)(lambda: None)
    return CliRunner().invoke(app, ["rotate-keys", "-i", str(tmp_path), *args])


def test_rotate_keys_dry_run_on_a_fleet_shows_every_host_together(monkeypatch, tmp_path):
    import json

    res = _rotate_cli(monkeypatch, tmp_path, "--grace", "9", "--dry-run", "--json")
    assert res.exit_code == 0, res.output + repr(res.exception)
    doc = json.loads(res.output)
    assert (doc["fleet"], doc["hosts"]) == (True, ["gpu-01", "gpu-02"])
    add, wait, retire = doc["operations"]
    assert [add["limit"], wait["wait_s"], retire["limit"]] == [None, 9, None]
    assert [add["extravars"]["selfhost_rotation_phase"], retire["extravars"]["selfhost_rotation_phase"]] == ["add", "retire"]


def test_rotate_keys_refuses_host_on_a_fleet_before_running_anything(monkeypatch, tmp_path):
    res = _rotate_cli(monkeypatch, tmp_path, "--host", "gpu-02", "--yes")
    assert isinstance(res.exception, ConfigError), res.output + repr(res.exception)
    assert "one key set shared by gpu-01, gpu-02" in res.exception.message and "drop --host" in res.exception.fix
