"""`vllm bench serve`, started the way `selfhost bench` starts it on a host (`vllm_args.VLLM_CLI_SHIM` with
`bench.client_args`), run for real from this venv against the real vLLM CPU server fixture; its saved
JSON result is read with `bench.parse`. The docker/Ansible wrapping is covered by the unit tests of the
operation value and by tests/e2e/test_day2_read.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from toolkit.operate import bench
from toolkit.plan.vllm_args import VLLM_CLI_SHIM
from toolkit.render.server import OFFLINE_ENV

pytestmark = pytest.mark.integration


def test_vllm_bench_serve_result_parses(vllm_server, tiny_model_dir, tmp_path):
    load = bench.Workload(concurrency=2, num_prompts=6, input_len=32, output_len=8)
    args = bench.client_args(base_url=vllm_server, model=str(tiny_model_dir), tokenizer=str(tiny_model_dir),
                             load=load, result_dir=str(tmp_path))
    env = {**os.environ, **OFFLINE_ENV}
    run = subprocess.run([sys.executable, "-c", VLLM_CLI_SHIM, "bench", "serve", *args], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    data = json.loads((tmp_path / bench.RESULT_FILE).read_text())
    r = bench.parse(data, host="local")
    print(f"\n[integration] vllm bench serve: {r.completed} requests in {r.duration:.2f} s, "
          f"{r.output_throughput:.1f} output tok/s, TTFT mean {r.mean_ttft_ms:.1f} ms, "
          f"TPOT mean {r.mean_tpot_ms:.1f} ms, ITL p99 {r.p99_itl_ms:.1f} ms", flush=True)
    assert (r.num_prompts, r.completed, r.failed, r.max_concurrency) == (6, 6, 0, 2)
    # --ignore-eos: every answer is exactly output_len tokens. The random prompts are input_len tokens before
    # the tokenizer re-reads the decoded text (a BOS and merges across the seams move it by a token or so).
    assert r.total_output_tokens == 6 * 8 and abs(r.total_input_tokens - 6 * 32) <= 6 * 2
    assert r.model == str(tiny_model_dir)
    assert 0 < r.median_ttft_ms <= r.p99_ttft_ms and 0 < r.mean_tpot_ms and r.mean_itl_ms >= 0
    # vLLM's own definitions, checked against its own totals: output tokens over the run's wall time.
    assert r.output_throughput == pytest.approx(r.total_output_tokens / r.duration, rel=1e-6)
    assert r.request_throughput == pytest.approx(r.completed / r.duration, rel=1e-6)
    assert r.per_user_tokens_per_s == round(1000 / r.mean_tpot_ms, 2)

