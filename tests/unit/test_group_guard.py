"""The multi-node group guard (playbooks/roles/selfhost_vllm/files/group_guard.py): real guard processes on
loopback (rank r on 127.0.0.(r+1), one port), each under a small supervisor that does what Docker's restart
policy does (start it again when it exits), running a stand-in server process. A group converges (every rank
in rank 0's generation, every server running), restarts as a whole when one rank restarts or goes silent, and
then stays up (no restart loop)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from toolkit.resources import data_dir

GUARD = data_dir("playbooks") / "roles" / "selfhost_vllm" / "files" / "group_guard.py"
SOURCE = GUARD.read_text()
_spec = importlib.util.spec_from_file_location("group_guard", GUARD)
guard_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(guard_module)

TIMEOUT = 2.0  # generous: a loaded CI machine must not look like a silent rank
SERVER = [sys.executable, "-c", "import time; time.sleep(600)"]  # stands in for vLLM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Supervised:
    """One rank's guard, started again whenever it exits (Docker's restart policy), until `stop()`."""

    def __init__(self, rank: int, n: int, port: int, command=SERVER, timeout: float = TIMEOUT):
        self.address = f"127.0.0.{rank + 1}"
        self.argv = [sys.executable, "-c", SOURCE, "--name", "t/1", "--rank", str(rank),
                     "--addresses", ",".join(f"127.0.0.{r + 1}" for r in range(n)), "--port", str(port),
                     "--timeout", str(timeout), "--interval", "0.2", "--grace", "2", "--", *command]
        self.port, self.exits, self.log = port, [], []
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._started = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        self._started.wait(5)

    def _run(self):
        while not self._stop.is_set():
            with tempfile.TemporaryFile("w+") as out:
                self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, text=True,
                                             start_new_session=True)
                self._started.set()
                self.proc.wait()
                # A container's processes all end with its PID 1: so do the guard's server here.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                out.seek(0)
                self.log.append(out.read())
            if self._stop.is_set():
                break
            self.exits.append(self.proc.returncode)
            time.sleep(0.1)

    def status(self) -> dict | None:
        return guard_module.ask(self.address, self.port, {"k": "status"}, timeout=1)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        self._stop.set()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        self._t.join(10)


@pytest.fixture
def group():
    made: list[Supervised] = []

    def make(n: int = 2, **kw) -> list[Supervised]:
        port = _free_port()
        made.extend(Supervised(r, n, port, **kw) for r in range(n))
        return made

    yield make
    for g in made:
        g.stop()


def converged(ranks: list[Supervised], within: float = 15) -> str:
    """Rank 0's generation once every rank joined it and every server runs; fails after `within` seconds."""
    t0, views = time.monotonic(), []
    while time.monotonic() - t0 < within:
        views = [r.status() for r in ranks]
        if all(views) and views[0]["gen"] and all(v["gen"] == views[0]["gen"] for v in views) \
                and set(views[0]["members"]) == {str(r) for r in range(1, len(ranks))} \
                and all(v["server"] == "running" for v in views):
            return views[0]["gen"]
        time.sleep(0.1)
    raise AssertionError(f"the group did not converge in {within}s: {views}\n" + "\n".join(
        "".join(r.log) for r in ranks))


def stays(ranks: list[Supervised], gen: str, seconds: float = 1.5 * TIMEOUT) -> None:
    """No rank exits and the generation holds for `seconds` (no restart loop)."""
    exits = [list(r.exits) for r in ranks]
    time.sleep(seconds)
    assert [r.exits for r in ranks] == exits and converged(ranks, 3) == gen


def test_a_group_converges_and_stays_up(group):
    ranks = group(2)
    gen = converged(ranks)
    stays(ranks, gen)
    assert [r.exits for r in ranks] == [[], []]


def test_a_follower_restart_restarts_the_group_once(group):
    r0, r1 = ranks = group(2)
    gen = converged(ranks)
    r1.signal(signal.SIGKILL)  # the container dies; the supervisor starts it again at once
    new = converged(ranks)
    assert new != gen and r0.exits == [guard_module.RESTART_CODE] and r1.exits == [-signal.SIGKILL]
    stays(ranks, new)


def test_a_rank_0_restart_restarts_the_followers(group):
    r0, r1 = ranks = group(2)
    gen = converged(ranks)
    r0.signal(signal.SIGKILL)
    new = converged(ranks)
    assert new != gen and r0.exits == [-signal.SIGKILL] and r1.exits == [guard_module.RESTART_CODE]
    stays(ranks, new)


def test_a_silent_follower_restarts_the_group_after_the_timeout(group):
    r0, r1 = ranks = group(2)
    gen = converged(ranks)
    r1.signal(signal.SIGSTOP)  # unreachable: no heartbeat, no answer
    t0 = time.monotonic()
    while not r0.exits and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    waited = time.monotonic() - t0
    assert r0.exits == [guard_module.RESTART_CODE] and TIMEOUT <= waited < TIMEOUT + 3, waited
    r1.signal(signal.SIGCONT)  # back: it still holds the old generation, hears the new one, restarts
    new = converged(ranks)
    assert new != gen and r1.exits == [guard_module.RESTART_CODE]
    stays(ranks, new)


def test_a_silent_rank_0_restarts_the_followers_after_the_timeout(group):
    r0, r1 = ranks = group(2)
    converged(ranks)
    r0.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    while not r1.exits and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert r1.exits == [guard_module.RESTART_CODE] and time.monotonic() - t0 >= TIMEOUT
    t1, view = time.monotonic(), None
    while view is None and time.monotonic() - t1 < 10:  # the restarted guard listening again
        view = r1.status()
        time.sleep(0.1)
    assert view and view["server"] == "waiting", "a follower starts its server only once it joined rank 0"
    r0.signal(signal.SIGCONT)  # rank 0 sees a member ask with no generation: the group restarts once
    new = converged(ranks)
    assert r0.exits == [guard_module.RESTART_CODE]
    stays(ranks, new)


def test_three_ranks_restart_together(group):
    ranks = group(3)
    gen = converged(ranks)
    ranks[2].signal(signal.SIGKILL)
    new = converged(ranks)
    assert new != gen and [r.exits for r in ranks] == [[75], [75], [-signal.SIGKILL]]
    stays(ranks, new)


def test_a_follower_that_never_comes_does_not_make_rank_0_loop(group):
    port = _free_port()
    r0 = Supervised(0, 2, port)
    try:
        time.sleep(3 * TIMEOUT)
        assert r0.exits == [] and r0.status()["server"] == "running" and r0.status()["members"] == {}
    finally:
        r0.stop()


def test_the_guard_exits_with_the_server(group):
    ranks = group(2, command=[sys.executable, "-c", "import time, sys; time.sleep(1.5); sys.exit(3)"])
    t0 = time.monotonic()
    while not (ranks[0].exits and ranks[1].exits) and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert ranks[0].exits[0] == 3 and ranks[1].exits, "the server's exit code is the container's; the group follows"


def test_sigterm_stops_the_server_and_the_guard_cleanly():
    port = _free_port()
    marker = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\ntime.sleep(600)"
    p = subprocess.Popen([sys.executable, "-c", SOURCE, "--name", "t/1", "--rank", "0", "--addresses",
                          "127.0.0.1,127.0.0.2", "--port", str(port), "--timeout", "2", "--", sys.executable, "-c",
                          marker], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.monotonic()
        while (guard_module.ask("127.0.0.1", port, {"k": "status"}, timeout=1) or {}).get("server") != "running":
            assert time.monotonic() - t0 < 10
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)  # `docker stop`
        assert p.wait(10) == 0
    finally:
        p.kill()


def test_rank_0_answers_only_the_ranks_own_address_and_its_group():
    port = _free_port()
    cfg = guard_module.parse(["--name", "t/1", "--rank", "0", "--addresses", "127.0.0.1,127.0.0.2", "--port",
                              str(port), "--timeout", "2", "--", "true"])
    g = guard_module.Guard(cfg)
    try:
        hb = {"k": "hb", "g": "t/1", "r": 1, "j": None}
        assert g.on_message(hb, "127.0.0.3") is None, "another address cannot speak for rank 1"
        assert g.on_message({**hb, "g": "other/1"}, "127.0.0.2") is None
        assert g.on_message({**hb, "r": 5}, "127.0.0.2") is None
        assert g.on_message(hb, "127.0.0.2") == {"k": "gen", "g": "t/1", "gen": g.gen}
        assert g.members == {}, "recorded only once it reports rank 0's generation"
        g.on_message({**hb, "j": "stale"}, "127.0.0.2")
        assert g.members == {}
        g.on_message({**hb, "j": g.gen}, "127.0.0.2")
        assert list(g.members) == [1]
        with pytest.raises(SystemExit) as e:
            g.on_message(hb, "127.0.0.2")  # a recorded member with no generation: it restarted
        assert e.value.code == guard_module.RESTART_CODE
    finally:
        g.server.close()


def test_the_command_line_is_checked():
    with pytest.raises(SystemExit):
        guard_module.parse(["--name", "t/1", "--rank", "0"])
    with pytest.raises(SystemExit):
        guard_module.parse(["--name", "t/1", "--bogus", "1", "--", "true"])


def test_preflight_tells_a_free_port_our_guard_and_another_program(group):
    probe = data_dir("playbooks") / "roles" / "selfhost_preflight" / "files" / "guard_port.py"

    def look(port: int, name: str = "t/1") -> str:
        return subprocess.run([sys.executable, "-c", probe.read_text(), "127.0.0.1", str(port), name],
                              capture_output=True, text=True, timeout=20).stdout.strip()

    assert look(_free_port()) == "free"
    r0 = group(2)[0]
    t0 = time.monotonic()
    while r0.status() is None and time.monotonic() - t0 < 10:
        time.sleep(0.1)
    assert look(r0.port) == "guard"
    assert look(r0.port, "other/1").startswith("taken: ")
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        assert look(other.getsockname()[1]).startswith("taken: ")
