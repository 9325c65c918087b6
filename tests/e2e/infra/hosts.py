"""SSH test hosts: containers that look like small servers (sshd + their own dockerd).

Layout (all created here, all labelled LABEL for teardown):
  selfhost-test-net      user bridge; hosts; ports 22/443 published on 127.0.0.1 only
  selfhost-test-outside  internal bridge; hosts + the sentinel (a plain HTTP server)
A container inside a host's dockerd on a normal bridge reaches the sentinel through the
host's NAT; one on an `--internal` inner network cannot. That lets tests prove egress rules.
"""
from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .config import GATEWAY_IMAGE, HOST_IMAGE, LABEL, NET, OUTSIDE_NET, VLLM_IMAGE, cache_path
from .dockercli import docker, log, out

# Several sessions (engineers, CI jobs) may share one engine: names and teardown are
# per session. Set SELFHOST_TEST_SESSION to pin it (e.g. to find hosts while debugging).
SESSION = os.environ.get("SELFHOST_TEST_SESSION") or secrets.token_hex(3)
SESSION_LABEL = f"{LABEL}.session"
HOST_PREFIX = f"selfhost-test-{SESSION}-host-"
SENTINEL = f"selfhost-test-{SESSION}-sentinel"
SENTINEL_PORT = 8080
INNER_INTERNAL_NET = "selfhost-test-internal"  # made inside a host by can_reach()

# What a container needs to run dockerd inside (--privileged is not grantable here).
DIND_FLAGS = ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
              "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
              "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"]
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",  # throwaway hosts
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]


@dataclass(frozen=True)
class TestHost:
    __test__ = False  # not a pytest test class

    name: str
    container_id: str
    ssh_host: str  # always 127.0.0.1
    ssh_port: int
    https_port: int  # host port published for the container's 443
    private_key: Path
    ip: str  # address on selfhost-test-net (host-to-host traffic)
    user: str = "root"

    def exec(self, *cmd: str, check: bool = True, timeout: float = 600,
             stdin=None) -> subprocess.CompletedProcess:
        """Run a command in the host container (no SSH): for setup and assertions."""
        args = ["exec", "-i", self.name, *cmd] if stdin is not None else ["exec", self.name, *cmd]
        return docker(*args, check=check, timeout=timeout, stdin=stdin)

    def ssh_command(self, command: str = "") -> list[str]:
        return ["ssh", *SSH_OPTS, "-i", str(self.private_key), "-p", str(self.ssh_port),
                f"{self.user}@{self.ssh_host}", *([command] if command else [])]

    def ssh(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run COMMAND over real SSH, like Ansible does."""
        return subprocess.run(self.ssh_command(command), capture_output=True, text=True,
                              check=check, timeout=timeout)

    def has_image(self, ref: str) -> bool:
        return self.exec("docker", "image", "inspect", ref, check=False).returncode == 0

    def load_image(self, tarball: Path, ref: str | None = None) -> None:
        """`docker load` a saved image into the host's own engine (skipped if present)."""
        if ref and self.has_image(ref):
            return
        with tarball.open("rb") as f:
            self.exec("docker", "load", "-q", stdin=f)


@dataclass(frozen=True)
class Sentinel:
    name: str
    container_id: str
    ip: str  # on selfhost-test-outside
    port: int = SENTINEL_PORT

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}/"


def ensure_keypair() -> Path:
    """An ed25519 key for root@test-hosts, kept in the cache dir. Returns the private key."""
    key = cache_path("ssh", "id_ed25519")
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "selfhost-e2e",
                        "-f", str(key)], check=True)
    key.chmod(0o600)
    return key


def ensure_networks() -> None:
    existing = set(out("network", "ls", "--format", "{{.Name}}").split())
    if NET not in existing:
        docker("network", "create", "--label", LABEL, NET)
    if OUTSIDE_NET not in existing:
        # --internal: nothing on it gets a route off this machine; only hosts <-> sentinel.
        docker("network", "create", "--internal", "--label", LABEL, OUTSIDE_NET)


def _ip(name: str, net: str) -> str:
    return out("inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{net}").IPAddress}}}}', name)


def _port(name: str, port: int) -> int:
    # "127.0.0.1:49153" (one line per address family; we publish on IPv4 loopback only)
    return int(out("port", name, f"{port}/tcp").splitlines()[0].rsplit(":", 1)[1])


def _wait(what: str, ok, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(1)


def _start_host(name: str, key: Path) -> TestHost:
    docker("rm", "-f", "-v", name, check=False)
    volume = f"{name}-docker"
    docker("volume", "rm", "-f", volume, check=False)
    docker("volume", "create", "--label", LABEL, "--label", f"{SESSION_LABEL}={SESSION}", volume)
    pub = key.with_suffix(".pub").read_text().strip()
    cid = out("run", "-d", "--name", name, "--hostname", name, "--init",
              "--label", LABEL, "--label", f"{SESSION_LABEL}={SESSION}",
              "--network", NET, *DIND_FLAGS, "-v", f"{volume}:/var/lib/docker",
              "-p", "127.0.0.1::22", "-p", "127.0.0.1::443",  # loopback only, random ports
              "-e", f"AUTHORIZED_KEY={pub}", HOST_IMAGE)
    docker("network", "connect", OUTSIDE_NET, name)
    return TestHost(name=name, container_id=cid, ssh_host="127.0.0.1", ssh_port=_port(name, 22),
                    https_port=_port(name, 443), private_key=key, ip=_ip(name, NET))


def start_hosts(n: int = 2) -> list[TestHost]:
    """Fresh test hosts (old ones with the same names are replaced), ready for SSH + docker."""
    key = ensure_keypair()
    ensure_networks()
    t0 = time.monotonic()
    hosts = [_start_host(f"{HOST_PREFIX}{i}", key) for i in range(1, n + 1)]
    for h in hosts:
        _wait(f"{h.name} ssh", lambda: h.ssh("true", check=False).returncode == 0)
        _wait(f"{h.name} dockerd", lambda: h.exec("docker", "info", check=False).returncode == 0)
    log(f"{n} test hosts up in {time.monotonic() - t0:.0f}s: "
        + ", ".join(f"{h.name} ssh=127.0.0.1:{h.ssh_port}" for h in hosts))
    return hosts


def start_sentinel() -> Sentinel:
    """A tiny HTTP server on the 'outside' network only (python3 from the host image)."""
    ensure_networks()
    docker("rm", "-f", SENTINEL, check=False)
    script = ("mkdir -p /srv/sentinel && echo selfhost-sentinel > /srv/sentinel/index.html && "
              f"exec python3 -m http.server {SENTINEL_PORT} --directory /srv/sentinel")
    cid = out("run", "-d", "--name", SENTINEL, "--network", OUTSIDE_NET,
              "--label", LABEL, "--label", f"{SESSION_LABEL}={SESSION}",
              "--entrypoint", "sh", HOST_IMAGE, "-c", script)
    s = Sentinel(SENTINEL, cid, _ip(SENTINEL, OUTSIDE_NET))
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{SENTINEL_PORT}/', timeout=2)"
    _wait("sentinel", lambda: docker("exec", SENTINEL, "python3", "-c", probe,
                                     check=False).returncode == 0, timeout=30)
    return s


def can_reach(host: TestHost, url: str, network: str = "bridge") -> bool:
    """True if a container in HOST's own dockerd, on inner NETWORK, can GET URL.

    NETWORK "internal" means an inner `docker network create --internal` network.
    Uses whichever test image is loaded in the host: gateway (curl) or vLLM (python).
    """
    if network == "internal":
        network = INNER_INTERNAL_NET
        host.exec("sh", "-c", f"docker network inspect {network} >/dev/null 2>&1 || "
                              f"docker network create --internal {network} >/dev/null")
    if host.has_image(GATEWAY_IMAGE):
        cmd = [GATEWAY_IMAGE, "curl", "-fsS", "-o", "/dev/null", "-m", "5", url]
    elif host.has_image(VLLM_IMAGE):
        cmd = ["--entrypoint", "python3", VLLM_IMAGE, "-c",
               f"import urllib.request; urllib.request.urlopen({url!r}, timeout=5)"]
    else:
        raise RuntimeError(f"{host.name}: load the gateway or vLLM image first")
    res = host.exec("docker", "run", "--rm", "--network", network, *cmd, check=False, timeout=60)
    return res.returncode == 0


def teardown_all(all_sessions: bool = False) -> None:
    """Remove this session's containers and volumes (every session's with ALL_SESSIONS),
    then the shared networks unless another session still uses them."""
    label = LABEL if all_sessions else f"{SESSION_LABEL}={SESSION}"
    ids = out("ps", "-aq", "--filter", f"label={label}").split()
    if ids:
        docker("rm", "-f", "-v", *ids)
    vols = out("volume", "ls", "-q", "--filter", f"label={label}").split()
    if vols:
        docker("volume", "rm", "-f", *vols)
    for net in (NET, OUTSIDE_NET):
        docker("network", "rm", net, check=False)  # refused while in use: fine
    log(f"test hosts, sentinel, volumes removed ({'all sessions' if all_sessions else SESSION})")


def describe(host: TestHost) -> str:
    return shlex.join(host.ssh_command())
