"""Labelled API keys in the rendered gateway, in real nginx (the e2e gateway image): the key's label becomes the
caller header the router gets (a client's own header never does), keys from before labels (value 1, default 0)
keep working with the site's default label, and no key / a wrong key is 401. The router is a stand-in that
answers with the headers it got (network alias = the router's container name)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.test_fleet_gateway import (
    APP_IMAGE,
    GATEWAY_IMAGE,
    _docker,
    _have,
)
from tests.unit.test_render_router import _render, _router_site

KEYS_PY = Path(__file__).parents[2] / "playbooks" / "roles" / "selfhost_gateway" / "files" / "api_keys.py"
ECHO = r'''
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        body = json.dumps({"caller": self.headers.get("X-Selfhost-Caller"),
                           "auth": self.headers.get("Authorization") or ""}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    do_GET = do_POST = _answer
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
'''
LEGACY_KEY = "f" * 64

pytestmark = pytest.mark.skipif(not (_have(GATEWAY_IMAGE) and _have(APP_IMAGE)),
                                reason="needs Docker and the e2e gateway/host images (python -m tests.e2e.infra build)")


def _keys(*args) -> dict:
    return json.loads(subprocess.run([sys.executable, str(KEYS_PY), *map(str, args)], check=True,
                                     capture_output=True, text=True).stdout)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gwkeys")
    bundle = _render(tmp, _router_site(tmp))
    dv, tag = bundle.vars, uuid.uuid4().hex[:8]
    gw = tmp / "gw"
    (gw / "tls").mkdir(parents=True)
    shutil.copy(bundle.path / "files" / "gateway" / "nginx.conf", gw / "nginx.conf")
    site = tmp / "site"
    shutil.copy(site / "pki" / "ca.crt", gw / "tls" / "ca.crt")
    host = next(p.stem for p in (site / "pki" / "hosts").glob("*.crt"))
    shutil.copy(site / "pki" / "hosts" / f"{host}.crt", gw / "tls" / "server.crt")
    shutil.copy(site / "pki" / "hosts" / f"{host}.key", gw / "tls" / "server.key")
    (gw / "router.conf").write_text('proxy_set_header X-Selfhost-Gateway-Secret "gw-secret";\n')
    (gw / "api-keys.conf").write_text(  # a file written before labels, as a host deployed earlier has it
        'map_hash_bucket_size 128;\nmap $http_authorization $selfhost_api_key_ok {\n    default 0;\n'
        f'    "Bearer {LEGACY_KEY}" 1;\n}}\n')
    net, made = f"selfhost-gwkeys-{tag}", []
    try:
        _docker("network", "create", "--internal", net)
        app = f"{net}-router"
        _docker("run", "-d", "--name", app, "--network", net, "--network-alias", dv.selfhost_router.container,
                "--entrypoint", "python3", APP_IMAGE, "-c", ECHO)
        made.append(app)
        name = f"{net}-gw"
        for p in [gw, *gw.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        _docker("run", "-d", "--name", name, "--network", net, "-v", f"{gw}:{dv.selfhost_gateway_mount}:ro",
                GATEWAY_IMAGE, *dv.selfhost_gateway_argv)
        made.append(name)
        for _ in range(60):
            if _docker("exec", name, "curl", "-sk", "-o", "/dev/null", "https://127.0.0.1/_gateway/health",
                       check=False).returncode == 0:
                break
            time.sleep(0.5)
        yield {"name": name, "dir": gw, "dv": dv}
    finally:
        for c in made:
            _docker("rm", "-f", c, check=False)
        _docker("network", "rm", net, check=False)


def _get(gw, key: str | None, **headers) -> tuple[int, dict | str]:
    args = ["curl", "-sk", "-o", "/tmp/b", "-w", "%{http_code}", "https://127.0.0.1/v1/models"]
    for k, v in ({"Authorization": f"Bearer {key}"} if key else {}).items() | headers.items():
        args += ["-H", f"{k.replace('_', '-')}: {v}"]
    status = int(_docker("exec", gw["name"], *args).stdout)
    body = _docker("exec", gw["name"], "cat", "/tmp/b").stdout
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def _reload(gw):
    for p in gw["dir"].rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    _docker("exec", gw["name"], *gw["dv"].selfhost_gateway_argv, "-s", "reload")
    time.sleep(1.5)


def test_keys_from_before_labels_carry_the_site_default_label(gateway):
    assert _get(gateway, LEGACY_KEY) == (200, {"caller": "default", "auth": ""})
    assert _get(gateway, LEGACY_KEY, X_Selfhost_Caller="forged")[1]["caller"] == "default"
    assert _get(gateway, None)[0] == 401 and _get(gateway, "0" * 64)[0] == 401
    assert _get(gateway, "0")[0] == 401


def test_labelled_keys_send_their_label_and_revoked_ones_stop(gateway):
    conf = gateway["dir"] / "api-keys.conf"
    _keys("add", conf, "t1", "default", "team-a")
    _keys("add", conf, "t2", "default", "legal")
    new = {line.split()[2].strip('";'): line.split()[1].strip('"')
           for line in conf.read_text().splitlines() if line.strip().startswith('"Bearer') and '" "' in line}
    _reload(gateway)
    assert _get(gateway, new["team-a"]) == (200, {"caller": "team-a", "auth": ""})
    assert _get(gateway, new["legal"], X_Selfhost_Caller="team-a")[1]["caller"] == "legal"
    assert _get(gateway, LEGACY_KEY)[1]["caller"] == "default", "the old key still works beside the new ones"
    _keys("revoke", conf, "", "default", "team-a")
    _reload(gateway)
    assert _get(gateway, new["team-a"])[0] == 401 and _get(gateway, new["legal"])[0] == 200


def test_a_fresh_labelled_file_refuses_what_has_no_key(gateway, tmp_path):
    conf = gateway["dir"] / "api-keys.conf"
    conf.unlink()
    _keys("create", conf, "default")
    key = next(line.split()[1].strip('"') for line in conf.read_text().splitlines() if line.strip().startswith('"Bearer'))
    _reload(gateway)
    assert _get(gateway, key)[1]["caller"] == "default"
    assert _get(gateway, None)[0] == 401 and _get(gateway, LEGACY_KEY)[0] == 401
