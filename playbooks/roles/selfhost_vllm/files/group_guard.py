"""selfhost group guard: PID 1 of every server container of a multi-node group, in front of vLLM.

vLLM's multi-node mode (mp backend) cannot take a rank back into a running group: once one node's server dies,
the others stay broken until every rank starts again. The guard makes a group restart as a whole (Kubernetes'
LeaderWorkerSet `RecreateGroupOnPodRestart`): when any rank's container restarts, or a rank is unreachable for
longer than --timeout, every guard of the group stops its vLLM and exits, Docker's restart policy starts each
container again, and the fresh ranks meet in a new generation.

Protocol: TCP on each node's private address and --port, one short connection per message (one JSON line in,
one out), so it crosses the same firewall openings as vLLM's own traffic between the nodes.
  * Rank 0 draws a new generation at every start and starts vLLM at once. A follower (rank > 0) asks rank 0
    every --interval s, telling which generation it joined (none yet after a start); rank 0 answers with its
    own. A follower joins the first generation it hears and only then starts its vLLM.
  * A follower exits when rank 0 answers with another generation (rank 0 restarted) or has not answered for
    --timeout s after the follower joined.
  * Rank 0 records a follower only once it reports rank 0's current generation. It exits when a recorded
    follower asks again with no generation (its container restarted) or is silent for --timeout s. A follower
    never recorded (still starting, its host down) never makes rank 0 exit: after one group restart the group
    waits instead of looping.
  * Any guard answers {"k": "status"} with its view (generation, members, vLLM running): preflight and
    operators read it.
The guard also exits when vLLM exits (with vLLM's code), and forwards SIGTERM/SIGINT to vLLM (`docker stop`).
Standard library only: it runs with the server image's python3 (`python3 -c <this file> ARGS -- COMMAND...`).
"""
import ipaddress
import json
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import time

RESTART_CODE = 75  # EX_TEMPFAIL: the container's exit status when the guard restarts the group


def log(msg):
    sys.stderr.write("[selfhost-guard] %s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), msg))
    sys.stderr.flush()


def parse(argv):
    """ARGS -- COMMAND...: --name N --rank R --addresses A0,A1,... --port P --timeout S [--interval S]
    [--grace S]."""
    if "--" not in argv:
        raise SystemExit("usage: group_guard --name N --rank R --addresses A0,A1 --port P --timeout S -- COMMAND")
    cut = argv.index("--")
    opts, command = argv[:cut], argv[cut + 1:]
    if len(opts) % 2:
        raise SystemExit("group_guard: every option takes one value")
    raw = dict(zip(opts[::2], opts[1::2]))
    known = {"--name", "--rank", "--addresses", "--port", "--timeout", "--interval", "--grace"}
    if set(raw) - known or not command:
        raise SystemExit("group_guard: unknown option(s) %s or no command" % sorted(set(raw) - known))
    return {"name": raw["--name"], "rank": int(raw["--rank"]), "addresses": raw["--addresses"].split(","),
            "port": int(raw["--port"]), "timeout": float(raw["--timeout"]),
            "interval": float(raw.get("--interval", "1")), "grace": float(raw.get("--grace", "10")),
            "command": command}


def read_message(sock):
    """One JSON line (at most 64 KiB) from `sock`; ValueError when it is not JSON, None for an empty answer."""
    data = b""
    while not data.endswith(b"\n") and len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return json.loads(data.decode() or "null")


def ask(address, port, message, timeout, source=None):
    """One request, one answer (a dict), or None when the peer cannot be reached or answers nonsense.
    `source`: the local address to speak from (a follower: its private address, which rank 0 checks)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            if source:
                s.bind((source, 0))
            s.connect((address, port))
            s.sendall(json.dumps(message).encode() + b"\n")
            answer = read_message(s)
        return answer if isinstance(answer, dict) else None
    except (OSError, ValueError):
        return None


class Guard:
    def __init__(self, cfg, clock=time.monotonic):
        self.cfg, self.clock = cfg, clock
        self.rank, self.address = cfg["rank"], cfg["addresses"][cfg["rank"]]
        self.leader = cfg["addresses"][0]
        self.gen = secrets.token_hex(8) if self.rank == 0 else None  # rank 0: the group's; others: joined
        self.members = {}  # rank 0: follower rank -> when it last asked in this generation
        self.last_answer = None  # followers: when rank 0 last answered
        self.last_ask = None
        self.child = None
        self.stopping = False
        self.started = clock()
        self.sel = selectors.DefaultSelector()
        self.server = self._listen()
        self.sel.register(self.server, selectors.EVENT_READ)

    def _listen(self):
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        deadline = self.clock() + max(self.cfg["timeout"], 5)
        while True:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the previous container's TIME_WAIT
            try:
                s.bind((self.address, self.cfg["port"]))
                s.listen(16)
                s.setblocking(False)
                return s
            except OSError as exc:
                s.close()
                if self.clock() > deadline:
                    raise SystemExit("group_guard: cannot listen on %s:%d: %s"
                                     % (self.address, self.cfg["port"], exc))
                time.sleep(0.5)

    # -- the state machine ------------------------------------------------------------------------------
    def on_message(self, msg, peer):
        """The answer to one message (None: no answer). Rank 0 may decide here that the group restarts."""
        if msg.get("k") == "status":
            return self.status()
        if msg.get("k") != "hb" or self.rank != 0 or msg.get("g") != self.cfg["name"]:
            return None
        rank = msg.get("r")
        if not isinstance(rank, int) or not 0 < rank < len(self.cfg["addresses"]):
            return None
        if peer is not None and ipaddress.ip_address(peer) != ipaddress.ip_address(self.cfg["addresses"][rank]):
            return None  # only the rank's own private address speaks for it
        joined = msg.get("j")
        if joined is None and rank in self.members:
            self.restart("rank %d restarted (it asks again with no generation)" % rank)
            return None  # no answer: it must join the next generation, not this one
        if joined == self.gen:
            self.members[rank] = self.clock()
        return {"k": "gen", "g": self.cfg["name"], "gen": self.gen}

    def on_answer(self, answer):
        """A follower's view of rank 0's answer (None: no answer)."""
        now = self.clock()
        if answer is None or answer.get("k") != "gen" or not answer.get("gen"):
            if self.gen is not None and now - (self.last_answer or now) > self.cfg["timeout"]:
                self.restart("rank 0 (%s) has not answered for %gs" % (self.leader, self.cfg["timeout"]))
            return
        self.last_answer = now
        if self.gen is None:
            self.gen = answer["gen"]
            log("rank %d joined generation %s of %s" % (self.rank, self.gen, self.cfg["name"]))
            self.start_child()
        elif answer["gen"] != self.gen:
            self.restart("rank 0 restarted (generation %s, this rank joined %s)" % (answer["gen"], self.gen))

    def check_members(self):
        now = self.clock()
        for rank, seen in sorted(self.members.items()):
            if now - seen > self.cfg["timeout"]:
                self.restart("rank %d (%s) silent for %gs" % (rank, self.cfg["addresses"][rank],
                                                               self.cfg["timeout"]))
                return

    def status(self):
        now = self.clock()
        return {"k": "status", "name": self.cfg["name"], "rank": self.rank, "gen": self.gen,
                "members": {str(r): round(now - t, 1) for r, t in sorted(self.members.items())},
                "last_answer_s": None if self.last_answer is None else round(now - self.last_answer, 1),
                "server": "running" if self.child is not None and self.child.poll() is None else
                          ("waiting" if self.child is None else "exited"),
                "up_s": round(now - self.started, 1)}

    # -- processes --------------------------------------------------------------------------------------
    def start_child(self):
        if self.child is None and not self.stopping:
            log("rank %d starts: %s" % (self.rank, " ".join(self.cfg["command"][:1] + ["..."])))
            self.child = subprocess.Popen(self.cfg["command"])

    def restart(self, why):
        """Stop vLLM and exit: Docker's restart policy starts this container again, in a new generation."""
        log("group restart: %s" % why)
        self.sel.unregister(self.server)
        self.server.close()  # nobody gets an answer from a generation that is ending
        self.stop_child()
        raise SystemExit(RESTART_CODE)

    def stop_child(self):
        if self.child is None or self.child.poll() is not None:
            return
        self.child.terminate()
        try:
            self.child.wait(self.cfg["grace"])
        except subprocess.TimeoutExpired:
            self.child.kill()  # the rest of the container's processes die with PID 1

    def on_signal(self, signum, _frame):
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)
        else:
            raise SystemExit(0)

    # -- the loop ---------------------------------------------------------------------------------------
    def serve_one(self, conn):
        try:
            conn.settimeout(2)
            msg = read_message(conn)
            answer = self.on_message(msg, conn.getpeername()[0]) if isinstance(msg, dict) else None
            if answer is not None:
                conn.sendall(json.dumps(answer).encode() + b"\n")
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def step(self, wait=0.2):
        for key, _ in self.sel.select(wait):
            try:
                conn, _addr = key.fileobj.accept()
            except OSError:
                continue
            self.serve_one(conn)
        now = self.clock()
        if self.rank == 0:
            self.check_members()
        elif self.last_ask is None or now - self.last_ask >= self.cfg["interval"]:
            self.last_ask = now
            self.on_answer(ask(self.leader, self.cfg["port"],
                               {"k": "hb", "g": self.cfg["name"], "r": self.rank, "j": self.gen},
                               timeout=min(self.cfg["interval"] * 2, 3), source=self.address))
        if self.child is not None and self.child.poll() is not None:
            code = self.child.returncode
            log("the server exited with code %s" % code)
            raise SystemExit(code if code > 0 else (0 if self.stopping else RESTART_CODE))

    def run(self):
        log("rank %d of %s on %s:%d (rank 0: %s), timeout %gs%s"
            % (self.rank, self.cfg["name"], self.address, self.cfg["port"], self.leader, self.cfg["timeout"],
               ", generation %s" % self.gen if self.gen else ", waiting to join rank 0's generation"))
        if self.rank == 0:
            self.start_child()
        while True:
            self.step()


def main(argv):
    guard = Guard(parse(argv))
    signal.signal(signal.SIGTERM, guard.on_signal)
    signal.signal(signal.SIGINT, guard.on_signal)
    guard.run()


if __name__ == "__main__":
    main(sys.argv[1:])
