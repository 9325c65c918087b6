"""`toolkit.operate.loadtest` against a real vLLM CPU server (no key, plain http), plus its bounds and the CLI."""
from __future__ import annotations

import json
import time

import pytest

from toolkit.operate import loadtest
from toolkit.errors import ConfigError

pytestmark = pytest.mark.integration


def test_load_test_against_real_vllm(vllm_server):
    result = loadtest.measure(loadtest.Target(url=vllm_server), concurrency=2, duration_s=60, max_requests=4,
                          max_tokens=16, timeout_s=120)
    assert result.errors == 0, result.error_samples
    assert result.requests == result.ok == 4
    assert result.output_tokens > 0
    assert result.ttft_p50_s > 0 and result.ttft_p95_s >= result.ttft_p50_s
    # ITL is the gap between streamed chunks; two tokens of the tiny model can share one read (a 0 gap).
    assert result.itl_p50_s >= 0 and result.itl_p95_s >= result.itl_p50_s
    assert result.output_tokens_per_s > 0 and result.requests_per_s > 0


def test_duration_bounds_the_run(vllm_server):
    start = time.monotonic()
    result = loadtest.measure(loadtest.Target(url=vllm_server), concurrency=1, duration_s=0.5, max_requests=1000,
                          max_tokens=4, timeout_s=60)
    assert result.requests < 1000
    assert time.monotonic() - start < 60


def test_cli_bench_json(vllm_server, tmp_path, capsys):
    from toolkit.cli import main
    from tests.unit.test_render import CASES

    plan = CASES["cpu-tiny"]()
    plan.dump(tmp_path / "plan.yml")
    model = loadtest.discover_model(loadtest.Target(url=vllm_server))
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--url", vllm_server, "--model", model, "--plan", str(tmp_path / "plan.yml"),
              "--requests", "2", "--concurrency", "2", "--max-tokens", "8", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert exc.value.code in (0, None), data
    assert data["ok"] == 2 and data["errors"] == 0
    assert data["predicted"]["decode_tokens_per_s"] == plan.performance.decode_tokens_per_s


def test_unreachable_server_is_a_config_error():
    with pytest.raises(ConfigError, match="127.0.0.1:9/v1/models"):
        loadtest.measure(loadtest.Target(url="http://127.0.0.1:9"), max_requests=1, duration_s=1)


def test_percentile():
    assert loadtest.percentile([], 50) is None
    assert loadtest.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert loadtest.percentile([1.0], 95) == 1.0
