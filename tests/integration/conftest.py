"""Shared fixtures for integration tests: a real vLLM CPU server on 127.0.0.1 (no Docker).

`vllm_server` starts `vllm.entrypoints.openai.api_server` from this interpreter's environment on the
tiny generated model (tests/e2e/infra/tiny_model.py), waits for /health, yields its base URL and
stops it at the end of the session. One server per session: a CPU run is slow to start (~1 min on
2 cores). Skipped when vLLM is not importable, unless CI=true (then it fails).
"""
from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

START_TIMEOUT_S = float(os.environ.get("SELFHOST_VLLM_START_TIMEOUT", "300"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("vLLM is not importable: `pip install -e '.[vllm]'` (scripts/test.sh does)")
        pytest.skip("vLLM not installed (optional extra [vllm])")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from tests.e2e.infra.tiny_model import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir):
    """Base URL (http://127.0.0.1:PORT) of a running vLLM CPU server serving the tiny model."""
    _need_vllm()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    log = tempfile.NamedTemporaryFile(prefix="vllm-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model_dir),
         "--max-model-len", "512", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited with {proc.returncode} before becoming healthy:\n{_tail(log.name)}")
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM not healthy after {START_TIMEOUT_S:.0f} s:\n{_tail(log.name)}")
            time.sleep(1)
        yield url
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's whole process group (API server + engine core), politely first."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


def _tail(path: str, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
