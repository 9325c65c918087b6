"""Checks that the e2e infrastructure itself is real and works."""
from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request

import pytest

from tests.e2e.infra import hosts
from tests.e2e.infra.config import LABEL
from tests.e2e.infra.dockercli import docker, out

pytestmark = pytest.mark.e2e


def test_host_answers_ssh_and_runs_docker(test_hosts):
    for h in test_hosts:
        assert h.ssh_host == "127.0.0.1"
        published = out("port", h.name)
        assert "0.0.0.0" not in published and "127.0.0.1" in published, published
        r = h.ssh("hostname && docker info --format '{{.ServerVersion}} {{.Driver}}' "
                  "&& python3 -c 'import docker'")
        name, engine = r.stdout.split("\n", 1)
        assert name == h.name
        assert "overlay2" in engine, engine
    # hosts see each other on selfhost-test-net
    a, b = test_hosts
    assert a.exec("sh", "-c", f"ssh-keyscan -T 5 {b.ip} 2>/dev/null | grep -q ed25519",
                  check=False).returncode == 0


def test_sentinel_reachable_only_through_host_nat(test_hosts, sentinel, e2e_images):
    gw = e2e_images["gateway"]
    h = test_hosts[0]
    h.load_image(gw.tarball, gw.ref)
    assert hosts.can_reach(h, sentinel.url, "bridge"), "inner bridge should reach the sentinel"
    assert not hosts.can_reach(h, sentinel.url, "internal"), "inner --internal must not"


def test_image_tarballs_match_their_sha256(e2e_images):
    for name in ("vllm", "gateway"):
        img = e2e_images[name]
        h = hashlib.sha256()
        with img.tarball.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        assert h.hexdigest() == img.sha256, name


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def test_vllm_image_serves_tiny_model(e2e_images, tiny_model):
    name = f"selfhost-test-{hosts.SESSION}-vllm-smoke"
    docker("rm", "-f", name, check=False)
    # --shm-size: vLLM's engine<->worker queue needs ~160 MiB of /dev/shm (Docker gives 64).
    docker("run", "-d", "--name", name, "--label", LABEL, "--shm-size", "1g",
           "-p", "127.0.0.1::8000", "-v", f"{tiny_model}:/models/tiny:ro",
           "-e", "VLLM_CPU_KVCACHE_SPACE=1", e2e_images["vllm"].ref,
           "--model", "/models/tiny", "--served-model-name", "tiny",
           "--max-model-len", "512", "--host", "0.0.0.0", "--port", "8000")
    try:
        port = int(out("port", name, "8000/tcp").splitlines()[0].rsplit(":", 1)[1])
        base = f"http://127.0.0.1:{port}"
        # ~1-2 min on an idle 2-core machine (imports + torch.compile); much more when the
        # cores are shared, hence the generous default.
        deadline = time.monotonic() + float(os.environ.get("SELFHOST_E2E_VLLM_START_S", "600"))
        while True:
            try:
                if _get(base + "/health")[0] == 200:
                    break
            except OSError:
                pass
            state = out("inspect", "--format", "{{.State.Status}}", name)
            if state != "running" or time.monotonic() > deadline:
                logs = docker("logs", "--tail", "60", name, check=False)
                pytest.fail(f"vLLM not healthy (state {state}):\n"
                            + (logs.stdout + logs.stderr).decode(errors="replace"))
            time.sleep(2)

        body = json.dumps({"model": "tiny", "max_tokens": 8,
                           "messages": [{"role": "user", "content": "hello world"}]}).encode()
        req = urllib.request.Request(base + "/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.load(r)
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert answer["usage"]["completion_tokens"] > 0

        status, metrics = _get(base + "/metrics")
        assert status == 200 and b"vllm:" in metrics
    finally:
        docker("rm", "-f", name, check=False)
