"""Session fixtures for the real end-to-end tests (Docker engine, SSH test hosts, vLLM CPU).

Everything under tests/e2e is marked `e2e`. Images and the tiny model are cached in
$SELFHOST_TEST_CACHE (default /var/cache/selfhost-test); `python -m tests.e2e.infra build`
pre-builds them. Set SELFHOST_TEST_KEEP=1 to leave hosts running after the session (debugging).
"""
from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.infra import hosts, images, tiny_model as tiny_model_mod
from tests.e2e.infra.hosts import Sentinel, TestHost  # noqa: F401  (re-exported for tests)
from tests.e2e.infra.images import BuiltImage  # noqa: F401

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def pytest_collection_modifyitems(config, items):
    """Mark everything here `e2e` (select or deselect it with `-m e2e` / `-m "not e2e"`)."""
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def docker_client():
    """Docker SDK client for the local engine (start it with .ci/docker-engine.sh)."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # engine missing or not running
        msg = f"Docker engine not reachable ({exc}); run .ci/docker-engine.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    yield client
    client.close()


@pytest.fixture(scope="session")
def e2e_images(docker_client) -> dict[str, "BuiltImage"]:
    """name -> BuiltImage(ref, id, tarball, sha256) for base, host, gateway, vllm."""
    return images.build_all()


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """Directory of the tiny random Llama model (deterministic files)."""
    return tiny_model_mod.ensure_tiny_model()


@pytest.fixture(scope="session")
def _e2e_lab(docker_client, e2e_images):
    """Owns the test networks; removes every labelled container/volume/network at the end."""
    hosts.ensure_networks()
    yield
    if os.environ.get("SELFHOST_TEST_KEEP") != "1":
        hosts.teardown_all()


@pytest.fixture(scope="session")
def test_hosts(_e2e_lab) -> list["TestHost"]:
    """Two fresh SSH test hosts (sshd + own dockerd), shared by the whole session."""
    return hosts.start_hosts(2)


@pytest.fixture(scope="session")
def sentinel(_e2e_lab) -> "Sentinel":
    """HTTP server (ip, port, url) on the 'outside' network that the hosts are attached to."""
    return hosts.start_sentinel()


# ---------------------------------------------------------------- one deployment per session

E2E_PLAN = Path(__file__).resolve().parents[1] / "unit" / "golden" / "cpu-tiny" / "plan.yml"


def e2e_plan(vllm_ref: str):
    """A CPU plan for the tiny model (the golden cpu-tiny plan, tightened for 2 shared cores)."""
    from toolkit.plan.model import Plan

    p = Plan.load(E2E_PLAN)
    return p.model_copy(update={
        "name": "tiny",
        "vllm": p.vllm.model_copy(update={"max_model_len": 512, "max_num_batched_tokens": 512, "max_num_seqs": 4}),
        "runtime": p.runtime.model_copy(update={"image": vllm_ref, "load_time_s": 120,
                                                # Both test hosts share this machine's cores: vLLM's default
                                                # auto-binding pins both servers' workers to core 0, where a
                                                # serving one starves the other's start-up.
                                                "env": {"VLLM_CPU_KVCACHE_SPACE": "1",
                                                        "VLLM_CPU_OMP_THREADS_BIND": "nobind"}}),
    })


@pytest.fixture(scope="session")
def deployed_site(tmp_path_factory, test_hosts, sentinel, e2e_images, tiny_model) -> dict:
    """The tiny CPU plan deployed ONCE per session on both test hosts, shared by every e2e module.

    Deployed the way a user does it: `selfhost deploy plan.yml -i SITE --yes --json` on fresh hosts
    (check-mode preview, then the run; the API keys are in the JSON, shown once).
    Returns {site, bundle, plan, plan_file, keys, hosts, sentinel, ca, report, first_s}: the site folder (its
    group_vars name the weights, so `selfhost … plan.yml -i site` renders without --weights), the
    bundle (path, files, DeployVars), the Plan and its plan.yml, the API key per host, the test hosts,
    the sentinel, the site CA, the deploy's JSON report and its wall time.
    """
    import json

    import yaml

    from toolkit.render.deploy_vars import DeployVars
    from toolkit.render.bundle import Bundle
    from toolkit.render.site import init_site

    tmp = tmp_path_factory.mktemp("deployed")
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
        "selfhost_weights_source": str(tiny_model),
        "selfhost_images_vllm_ref": vllm.ref, "selfhost_images_vllm_tarball": str(vllm.tarball),
        "selfhost_images_gateway_ref": gw.ref, "selfhost_images_gateway_tarball": str(gw.tarball),
        "selfhost_verify_egress_probe": f"{sentinel.ip}:{sentinel.port}",
    }))
    plan = e2e_plan(vllm.ref)
    plan_file = tmp / "plan.yml"
    plan.dump(plan_file)
    out = tmp / "bundle"
    t0 = time.monotonic()
    res = selfhost_cli("deploy", plan_file, "-i", site, "--out", out, "--yes", "--json", cwd=tmp, timeout=2400)
    seconds = time.monotonic() - t0
    print(f"\n[e2e] first deploy (selfhost deploy --yes --json): {seconds:.0f}s, exit {res.returncode}", flush=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    report = json.loads(res.stdout)
    keys = report["api_keys"]
    assert set(keys) == {h.name for h in test_hosts}, "a fresh key per host, shown once"
    assert report["preview"]["status"] == "successful", "the check-mode preview passes on fresh hosts"
    for key in keys.values():
        assert key not in res.stderr, "keys appear only in the JSON document"
    from toolkit.render.bundle import load_vars  # the extravars strings are `!unsafe`-tagged

    dv = DeployVars.model_validate(load_vars((out / "env" / "extravars").read_text()))
    bundle = Bundle(path=out, files=sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()),
                    vars=dv)
    return {"site": site, "bundle": bundle, "plan": plan, "plan_file": plan_file, "keys": keys,
            "hosts": test_hosts, "sentinel": sentinel, "ca": site / "pki" / "ca.crt", "report": report,
            "first_s": seconds}


def selfhost_cli(*args, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the CLI as a user does (a subprocess, no terminal, no colour); returns the completed process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "toolkit", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def selfhost_popen(*args, cwd: Path) -> subprocess.Popen:
    """The CLI as `selfhost_cli` runs it, but running: its output (stdout and stderr, unbuffered) is read
    line by line while it works (a key shown at the start of a grace window)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "toolkit", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, stdin=subprocess.DEVNULL)


def print_changes(log: list):
    """A deployer on_event callback: print (and keep) each changed/failed/unreachable task."""
    def on_event(e):
        if e.status in ("changed", "failed", "unreachable"):
            log.append(e)
            print(f"  [{e.host}] {e.step}: {e.task}: {e.status}" + (f" — {e.message}" if e.message else ""),
                  flush=True)
    return on_event



def gateway_request(ca: Path, host, path: str, *, key: str | None = None, body: dict | None = None,
                    timeout: float = 120) -> tuple[int, dict]:
    """(HTTP status, JSON body or {}) of one request through a host's TLS gateway, the chain checked
    against the site CA (the 127.0.0.1 SAN included). Connection errors raise: callers that count
    them (the client loops) catch them."""
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(f"https://127.0.0.1:{host.https_port}{path}",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw.strip().startswith(b"{") else {}
    except urllib.error.HTTPError as exc:
        return exc.code, {}


class ClientLoop:
    """A client calling one host's gateway in the background until the block ends: every answer kept in
    order (`results`: an HTTP status, or the repr of a connection/TLS/timeout error). `key` may be changed
    while it runs (a client switching to a rotated key)."""

    def __init__(self, ca: Path, host, key: str | None, path: str = "/v1/models", body: dict | None = None,
                 pause: float = 0.2, timeout: float = 60):
        import threading

        self.key = key
        self.results: list[int | str] = []
        self._ca, self._host, self._path, self._body, self._timeout = ca, host, path, body, timeout
        self._pause = pause
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @property
    def statuses(self) -> list[int]:
        return [r for r in self.results if isinstance(r, int)]

    @property
    def errors(self) -> list[str]:
        return [r for r in self.results if isinstance(r, str)]

    def _run(self):
        while not self._stop.is_set():
            try:
                self.results.append(gateway_request(self._ca, self._host, self._path, key=self.key, body=self._body,
                                                    timeout=self._timeout)[0])
            except Exception as exc:  # connection refused/reset, TLS error, timeout
                self.results.append(repr(exc))
            self._stop.wait(self._pause)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=120)


def wait_healthy(ca: Path, host, timeout: float = 420) -> None:
    """Until the host's gateway answers /health with 200 (a server started or restarted behind it)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if gateway_request(ca, host, "/health", timeout=10)[0] == 200:
                return
        except Exception:  # the gateway itself restarting
            pass
        time.sleep(3)
    raise AssertionError(f"{host.name}: no healthy server behind the gateway after {timeout}s")


def site_variant(deployed_site: dict, tmp: Path, **settings) -> Path:
    """A copy of the session site (without its .selfhost state) under `tmp`, its group_vars updated with
    `settings`: the modules that redeploy the session's hosts another way start from it."""
    import shutil

    import yaml

    site = tmp / "site"
    shutil.copytree(deployed_site["site"], site, ignore=shutil.ignore_patterns(".selfhost"))
    gv = site / "group_vars" / "inference.yml"
    gv.write_text(yaml.safe_dump({**yaml.safe_load(gv.read_text()), **settings}))
    return site
