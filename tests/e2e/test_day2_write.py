"""Mutating day-2 commands against the real deployment (session fixture `deployed_site`), run as a user
runs them (a subprocess of the CLI): the host lock refuses a second run, a broken upgrade rolls the
first host back by itself while the other keeps serving, a new model revision rolls out one host at
a time, `rollback` works from what the host keeps, keys rotate with no failed request, and `destroy`
keeps what a redeploy needs. The module leaves the original plan deployed (and the rotated keys in
`deployed_site["keys"]`) for whoever runs next.

Timings (rollback, rollout) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ClientLoop, gateway_request, selfhost_cli

pytestmark = pytest.mark.e2e

STATE = "/var/lib/selfhost/tiny"
TIMES: dict[str, float] = {}


def _request(site, host, path: str, key: str | None, body: dict | None = None, timeout: float = 60) -> int:
    """HTTP status through the gateway; raises on connection errors (the loops count those)."""
    return gateway_request(site["ca"], host, path, key=key, body=body, timeout=timeout)[0]


CHAT = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hello"}]}


def _loop(site, host, key: str, path: str = "/v1/models", body: dict | None = None, pause: float = 0.2) -> ClientLoop:
    """A client hammering one host in the background; records every status and every exception."""
    return ClientLoop(site["ca"], host, key, path, body, pause=pause)


def _json_file(host, path: str) -> dict | None:
    res = host.exec("cat", path, check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def _current(host) -> dict:
    return _json_file(host, f"{STATE}/current")


def _started_at(host, container: str) -> str:
    return host.exec("docker", "inspect", "--format", "{{.State.StartedAt}}", container).stdout.decode().strip()


@pytest.fixture(scope="module")
def site(deployed_site, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("day2w")
    first = {h.name: _current(h) for h in deployed_site["hosts"]}
    assert all(first.values()), "the first deploy records a release on every host"
    return {**deployed_site, "cwd": cwd, "release0": first}


def _plan_file(site, name: str, **vllm) -> Path:
    plan = site["plan"]
    if vllm:
        plan = plan.model_copy(update={"vllm": plan.vllm.model_copy(update=vllm)})
    path = site["cwd"] / name
    plan.dump(path)
    return path


# ---------------------------------------------------------------- (d) the host lock

def test_locked_host_refuses_a_second_deploy_with_the_holder_named(site):
    h1 = site["hosts"][0]
    owner = {"id": "someone-else", "who": "alice@ops-box", "pid": 4242, "since": "2026-11-01T09:00:00Z",
             "command": "selfhost upgrade plan.yml -i prod"}
    h1.exec("python3", "-c", "import os, sys; os.makedirs(sys.argv[1]); open(sys.argv[1] + '/owner.json', 'w')"
            ".write(sys.argv[2])", f"{STATE}/lock", json.dumps(owner))  # as a run that is still going would
    res = selfhost_cli("deploy", site["plan_file"], "-i", site["site"], "--yes", cwd=site["cwd"])
    text = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2, text
    assert (f"{h1.name} is locked by alice@ops-box since 2026-11-01T09:00:00Z running selfhost upgrade plan.yml "
            f"-i prod; wait for it, or `selfhost unlock -i {site['site']} --host {h1.name}` if that run died") in text
    assert h1.exec("test", "-d", f"{STATE}/lock", check=False).returncode == 0, "someone else's lock is left alone"

    res = selfhost_cli("unlock", "-i", site["site"], "--host", h1.name, cwd=site["cwd"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "removed the lock of alice@ops-box" in res.stdout
    assert h1.exec("test", "-e", f"{STATE}/lock", check=False).returncode != 0
    audit = h1.exec("sh", "-c", f"stat -c %a {STATE}/audit.log; tail -n 1 {STATE}/audit.log").stdout.decode()
    mode, last = audit.split("\n", 1)
    assert mode == "600"
    rec = json.loads(last)
    assert rec["command"].startswith("selfhost unlock") and rec["result"] == "ok" and rec["host"] == h1.name
    assert {"who", "when", "command", "plan_digest", "result", "changed"} <= set(rec)


# ---------------------------------------------------------------- (a) a broken upgrade rolls back by itself

def test_broken_upgrade_rolls_the_first_host_back_and_stops(site):
    h1, h2 = site["hosts"]
    # The tiny model has 1024 positions: vLLM refuses to start with a longer --max-model-len.
    bad = _plan_file(site, "plan-bad.yml", max_model_len=1536)
    h2_started = _started_at(h2, site["bundle"].vars.selfhost_vllm_container)
    t0 = time.monotonic()
    with _loop(site, h2, site["keys"][h2.name], "/v1/chat/completions", CHAT, pause=0.5) as other:
        res = selfhost_cli("upgrade", bad, "-i", site["site"], "--yes", cwd=site["cwd"])
    TIMES["broken upgrade + automatic rollback"] = time.monotonic() - t0
    text = " ".join((res.stdout + res.stderr).split())
    print(f"\n[e2e] broken upgrade -> rolled back in {TIMES['broken upgrade + automatic rollback']:.0f}s; "
          f"other host: {len(other.statuses)} requests, errors {other.errors[:3]}", flush=True)
    assert res.returncode == 2, text
    assert "~ flag --max-model-len: 512 -> 1536" in text, "the diff names the flag that changes"
    assert f"upgrade stopped: {h1.name}: the rollout failed at" in text
    assert "rolled back automatically to release " + site["release0"][h1.name]["release"] in text
    assert f"The rollout stopped at {h1.name}: the hosts after it were not touched" in text
    # The failure carries vLLM's own reason (its last log lines), not only the flag the diff named.
    assert "User-specified max_model_len (1536) is greater than the derived max_model_len" in text, \
        "the failure says why vLLM refused to start"

    assert other.statuses and set(other.statuses) == {200} and not other.errors, "the other host kept serving"
    assert _current(h1) == site["release0"][h1.name], "host 1 is back on its release"
    assert _current(h2) == site["release0"][h2.name]
    assert _started_at(h2, site["bundle"].vars.selfhost_vllm_container) == h2_started, "host 2 was not touched"
    assert _request(site, h1, "/v1/chat/completions", site["keys"][h1.name], CHAT) == 200
    last = json.loads(h1.exec("tail", "-n", "1", f"{STATE}/audit.log").stdout)
    assert last["command"].startswith("selfhost upgrade") and last["result"] == "rolled back"


# ---------------------------------------------------------------- (b) a new model revision, one host at a time

def test_new_model_revision_rolls_out_one_host_at_a_time(site, tiny_model):
    h1, h2 = site["hosts"]
    rev2 = site["cwd"] / "tiny-rev2"
    shutil.copytree(tiny_model, rev2)
    gen = json.loads((rev2 / "generation_config.json").read_text())
    (rev2 / "generation_config.json").write_text(json.dumps({**gen, "selfhost_test_revision": 2}, indent=2) + "\n")
    plan2 = site["plan"].model_copy(update={"model": site["plan"].model.model_copy(update={"revision": "rev2"})})
    plan2_file = site["cwd"] / "plan-rev2.yml"
    plan2.dump(plan2_file)

    t0 = time.monotonic()
    res = selfhost_cli("upgrade", plan2_file, "-i", site["site"], "--weights", rev2, "--yes", "--json", cwd=site["cwd"])
    TIMES["good upgrade (2 hosts, serial)"] = time.monotonic() - t0
    print(f"\n[e2e] new model revision rolled out in {TIMES['good upgrade (2 hosts, serial)']:.0f}s", flush=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(res.stdout)
    for h in (h1, h2):
        whats = {c["what"] for c in report["diff"][h.name]}
        assert {"plan", "model"} <= whats, report["diff"][h.name]
    container = site["bundle"].vars.selfhost_vllm_container
    for h in (h1, h2):
        cur = _current(h)
        assert cur["plan_digest"] == plan2.digest(), "the release record names the new plan"
        assert cur["weights_dir"] != site["release0"][h.name]["weights_dir"], "a new revision dir"
        assert _json_file(h, f"{STATE}/previous") == site["release0"][h.name], "previous keeps the old release"
        assert h.exec("test", "-d", site["release0"][h.name]["weights_dir"]).returncode == 0, "old weights kept"
        assert _request(site, h, "/v1/chat/completions", site["keys"][h.name], CHAT) == 200
    # One at a time: host 2's new server started only after host 1's had loaded and verified.
    from datetime import datetime

    s1, s2 = (datetime.fromisoformat(_started_at(h, container)[:19]) for h in (h1, h2))
    assert (s2 - s1).total_seconds() > 20, (s1, s2)
    site["plan2"] = plan2


def test_rollback_from_what_the_host_keeps(site):
    h1, h2 = site["hosts"]
    t0 = time.monotonic()
    res = selfhost_cli("rollback", "-i", site["site"], "--host", h1.name, "--yes", cwd=site["cwd"])
    TIMES["rollback (1 host)"] = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert _current(h1) == site["release0"][h1.name]
    assert _json_file(h1, f"{STATE}/previous")["plan_digest"] == site["plan2"].digest()
    assert _current(h2)["plan_digest"] == site["plan2"].digest(), "--host limits the rollback"
    assert _request(site, h1, "/v1/chat/completions", site["keys"][h1.name], CHAT) == 200


# ---------------------------------------------------------------- (c) key rotation without a failed request

def test_rotate_keys_without_a_failed_request(site):
    h1, h2 = site["hosts"]
    old = dict(site["keys"])
    window = {h.name: _GraceProbe(site, h, old[h.name]) for h in (h1, h2)}
    with _loop(site, h1, old[h1.name], pause=0.1) as loop1, _loop(site, h2, old[h2.name], pause=0.1) as loop2:
        time.sleep(1)
        for probe in window.values():
            probe.start()
        res = selfhost_cli("rotate-keys", "-i", site["site"], "--grace", "5", "--yes", "--json", cwd=site["cwd"])
        time.sleep(2)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    new = json.loads(res.stdout)["api_keys"]
    assert set(new) == {h1.name, h2.name} and all(new[h] != old[h] for h in new)
    for name, probe in window.items():
        probe.join(30)
        # The grace window, seen from outside: both keys answered 200 at the same moment, and the key
        # seen on the host during it is the one the command handed out.
        assert probe.both_ok, f"{name}: no moment where the old and the new key were both accepted ({probe.seen})"
        assert probe.new_key == new[name]
    for loop in (loop1, loop2):
        print(f"\n[e2e] rotation: {len(loop.statuses)} requests, statuses {sorted(set(loop.statuses))}, "
              f"errors {len(loop.errors)}", flush=True)
        assert not loop.errors, loop.errors[:5]
        assert set(loop.statuses) <= {200, 401} and 200 in loop.statuses and loop.statuses[-1] == 401
        first_401 = loop.statuses.index(401)
        assert set(loop.statuses[first_401:]) == {401}, "once retired, the old key stays out"
    for h in (h1, h2):
        assert _request(site, h, "/v1/models", old[h.name]) == 401
        assert _request(site, h, "/v1/models", new[h.name]) == 200
        conf = h.exec("cat", f"{site['bundle'].vars.selfhost_gateway_dir}/api-keys.conf").stdout.decode()
        assert old[h.name] not in conf
        assert h.exec("test", "-e", f"{site['bundle'].vars.selfhost_gateway_dir}/api-keys.conf.new",
                      check=False).returncode != 0, "the host's copy of the new key is deleted"
    site["keys"].update(new)  # shared with later modules


class _GraceProbe(threading.Thread):
    """Watches a host's keys file during a rotation; once a second key is in it, asks with the old and
    the new key back to back and records whether both were accepted."""

    def __init__(self, site, host, old_key: str):
        super().__init__(daemon=True)
        self.site, self.host, self.old = site, host, old_key
        self.new_key: str | None = None
        self.both_ok = False
        self.seen: list[tuple[int, int]] = []

    def run(self):
        path = f"{self.site['bundle'].vars.selfhost_gateway_dir}/api-keys.conf"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not self.both_ok:
            text = self.host.exec("cat", path, check=False).stdout.decode()
            keys = [k for k in re.findall(r'"Bearer ([^"]+)"', text) if k != self.old]
            if keys and self.old in text:
                self.new_key = keys[0]
                pair = (_request(self.site, self.host, "/v1/models", self.old),
                        _request(self.site, self.host, "/v1/models", self.new_key))
                self.seen.append(pair)
                self.both_ok = pair == (200, 200)
            time.sleep(0.2)


# ---------------------------------------------------------------- (e) destroy, then deploy again

def test_destroy_asks_and_refuses_without_a_terminal(site):
    res = selfhost_cli("destroy", "-i", site["site"], cwd=site["cwd"])
    assert res.returncode == 1
    assert "refusing to destroy without confirmation: stdin is not a terminal" in res.stdout + res.stderr
    assert "--yes" in res.stdout + res.stderr


def test_destroy_keeps_weights_and_keys_and_deploy_restores(site):
    v = site["bundle"].vars
    res = selfhost_cli("destroy", "-i", site["site"], "--yes", cwd=site["cwd"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for h in site["hosts"]:
        names = h.exec("docker", "ps", "-a", "--format", "{{.Names}}").stdout.decode().split()
        assert v.selfhost_vllm_container not in names and v.selfhost_gateway_container not in names
        nets = h.exec("docker", "network", "ls", "--format", "{{.Name}}").stdout.decode().split()
        assert v.selfhost_network_internal not in nets and v.selfhost_network_edge not in nets
        assert h.exec("test", "-d", v.selfhost_weights_dir).returncode == 0, "weights stay"
        assert h.exec("test", "-s", f"{v.selfhost_gateway_dir}/api-keys.conf").returncode == 0, "keys stay"
        assert _current(h), "releases stay"
        assert h.has_image(v.selfhost_images_vllm.ref), "images stay"

    t0 = time.monotonic()
    res = selfhost_cli("deploy", site["plan_file"], "-i", site["site"], "--yes", cwd=site["cwd"])
    TIMES["deploy after destroy"] = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for h in site["hosts"]:
        assert _request(site, h, "/v1/chat/completions", site["keys"][h.name], CHAT) == 200, "same (rotated) key"
        assert _current(h) == site["release0"][h.name]


def test_report_times(site):
    """Day-2 wall times for the e2e report; every timed phase ran, and undoing one host is quicker
    than rolling a new revision over two."""
    print("\n[e2e] day-2 write wall times: " + ", ".join(f"{k} {v:.0f}s" for k, v in TIMES.items()), flush=True)
    phases = {"broken upgrade + automatic rollback", "good upgrade (2 hosts, serial)", "rollback (1 host)",
              "deploy after destroy"}
    assert phases <= set(TIMES), f"phases that did not run: {sorted(phases - set(TIMES))}"
    assert TIMES["rollback (1 host)"] < TIMES["good upgrade (2 hosts, serial)"], TIMES
