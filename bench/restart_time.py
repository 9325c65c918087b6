"""How long the vLLM CPU server takes to become healthy, with an empty and with a kept compile cache.

Deployments mount a host directory at VLLM_CACHE_ROOT (selfhost_vllm_cache_dir) so that a restart,
heal or rollback reuses torch.compile's artefacts. This measures what that buys, on this machine:

    python bench/restart_time.py [--runs 2]

It needs the e2e images and the tiny model (`python -m tests.e2e.infra build`) and a local Docker
engine; the container has no network at all (health is probed from inside it).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.infra import config, tiny_model  # noqa: E402

ARGV = ["--model", "/models/tiny", "--served-model-name", "tiny", "--max-model-len", "512",
        "--max-num-seqs", "4", "--max-num-batched-tokens", "512", "--host", "127.0.0.1", "--port", "8000"]
PROBE = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def time_to_healthy(image: str, model: Path, cache: Path, timeout_s: float = 900) -> float:
    name = f"selfhost-bench-restart-{int(time.time())}"
    _docker("run", "-d", "--name", name, "--network", "none", "--shm-size", "1g",
            "-v", f"{model}:/models/tiny:ro", "-v", f"{cache}:/var/cache/vllm",
            "-e", "VLLM_CACHE_ROOT=/var/cache/vllm", "-e", "VLLM_CPU_KVCACHE_SPACE=1", image, *ARGV)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout_s:
            if _docker("exec", name, "python3", "-c", PROBE, check=False).returncode == 0:
                return time.monotonic() - t0
            state = _docker("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            if state != "running":
                raise SystemExit(f"server exited: {_docker('logs', '--tail', '20', name, check=False).stderr}")
            time.sleep(1)
        raise SystemExit(f"not healthy after {timeout_s:.0f} s")
    finally:
        _docker("rm", "-f", name, check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2, help="starts per variant")
    args = ap.parse_args()
    image, model = config.VLLM_IMAGE, tiny_model.ensure_tiny_model()
    cold, warm = [], []
    for _ in range(args.runs):
        cache = Path(tempfile.mkdtemp(prefix="selfhost-vllm-cache-"))
        try:
            cold.append(time_to_healthy(image, model, cache))  # empty cache: compiles
            warm.append(time_to_healthy(image, model, cache))  # same cache: a restart
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        print(f"empty cache {cold[-1]:.1f} s, kept cache {warm[-1]:.1f} s", flush=True)
    print(f"time to healthy ({image}, tiny model, {args.runs} runs): empty cache median "
          f"{statistics.median(cold):.1f} s, kept cache median {statistics.median(warm):.1f} s "
          f"({statistics.median(cold) - statistics.median(warm):.1f} s saved per restart)")


if __name__ == "__main__":
    main()
