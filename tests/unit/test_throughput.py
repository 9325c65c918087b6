"""Serving-speed model: physics checks and the accuracy gate on real vLLM benchmark runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from toolkit import catalog
from toolkit.sizing import kv, throughput
from toolkit.sizing.weights import weight_bytes

ROOT = Path(__file__).resolve().parents[2]


def _setup(model: str, gpu: str = "H100-SXM", quant: str | None = None, tp: int = 1):
    r = catalog.resolve_model(model)
    q = catalog.quant(quant) if quant else r.quant
    wb = weight_bytes(r.spec, q)
    kvb = kv.bytes_per_token(r.spec, tp=tp, pp=1, b_kv=2)
    return r.spec, wb, catalog.gpu(gpu), q, dict(tp=tp, pp=1, kv_bytes_per_token=kvb)


def test_moe_touches_more_experts_at_larger_batch():
    touched = [throughput.experts_touched(128, 8, b) for b in (1, 8, 64, 512)]
    assert touched[0] == pytest.approx(8)
    assert touched == sorted(touched) and touched[-1] <= 128


def test_per_user_falls_and_aggregate_rises_with_batch():
    spec, wb, gpu, q, kw = _setup("qwen3-8b")
    speeds = [throughput.serving_speed(spec, wb, gpu, q, concurrency=b, input_tokens=500, output_tokens=300, **kw)
              for b in (1, 8, 64)]
    assert [s.per_user_tokens_per_s for s in speeds] == sorted((s.per_user_tokens_per_s for s in speeds), reverse=True)
    assert [s.tokens_per_s for s in speeds] == sorted(s.tokens_per_s for s in speeds)


def test_ttft_grows_with_prompt_length():
    spec, wb, gpu, q, kw = _setup("qwen3-14b")
    ttft = [throughput.serving_speed(spec, wb, gpu, q, concurrency=4, input_tokens=n, output_tokens=200, **kw).ttft_s
            for n in (200, 2000, 16000)]
    assert ttft == sorted(ttft) and ttft[-1] > 5 * ttft[0]


def test_saturation_beats_single_user():
    spec, wb, gpu, q, kw = _setup("qwen3-8b")
    one = throughput.serving_speed(spec, wb, gpu, q, concurrency=1, input_tokens=300, output_tokens=300, **kw)
    sat = throughput.serving_speed(spec, wb, gpu, q, concurrency=None, input_tokens=300, output_tokens=300,
                                   kv_capacity_tokens=400_000, **kw)
    assert sat.tokens_per_s >= one.tokens_per_s and sat.requests_per_s >= one.requests_per_s


def test_weight_format_kernels_by_generation():
    h100, a100 = catalog.gpu("H100-SXM"), catalog.gpu("A100-80GB-SXM")
    assert throughput.kernel_family(h100, catalog.quant("fp8")) == "fp8"
    assert throughput.kernel_family(a100, catalog.quant("fp8")) == "weight_only"
    assert throughput.kernel_family(h100, catalog.quant("awq")) == "weight_only"
    assert throughput.kernel_family(catalog.gpu("B200"), catalog.quant("mxfp4")) == "fp4"


def test_serving_speed_at_a_batch_on_gpu_and_cpu():
    spec, wb, gpu, q, kw = _setup("qwen3-8b")
    s = throughput.serving_speed(spec, wb, gpu, q, concurrency=4, input_tokens=500, output_tokens=300, **kw)
    # A user streams at 1/TPOT; the replica's output rate is below batch × that (each request also waits its TTFT).
    assert s.batch == 4 and s.per_user_tokens_per_s == pytest.approx(1 / s.tpot_s)
    assert s.tokens_per_s == pytest.approx(s.requests_per_s * 300)
    assert s.tokens_per_s < 4 * s.per_user_tokens_per_s
    cpu = throughput.serving_speed(spec, wb, None, q, concurrency=1, input_tokens=500, output_tokens=300, **kw)
    assert 0 < cpu.per_user_tokens_per_s < s.per_user_tokens_per_s
    assert throughput.assumptions(gpu, 1000, q)


def test_accuracy_on_validation_records():
    path = ROOT.parent / "shared" / "validation" / "vllm_bench_results.json"
    if not path.exists():
        pytest.skip("validation set not present")
    sys.path.insert(0, str(ROOT / "bench"))
    import throughput_accuracy as ta

    _, errs = ta.run(path)
    summary = ta.summary(errs)
    # The exact targets (median absolute error), and every record family/GPU grouping prints.
    assert summary["per_user"][0] <= ta.TARGETS["per_user"]
    assert summary["output"][0] <= ta.TARGETS["output"]
    assert summary["ttft"][0] <= ta.TARGETS["ttft"]


def test_bench_reports_groups_and_constants():
    path = ROOT.parent / "shared" / "validation" / "vllm_bench_results.json"
    if not path.exists():
        pytest.skip("validation set not present")
    sys.path.insert(0, str(ROOT / "bench"))
    import throughput_accuracy as ta

    rows, _ = ta.run(path)
    assert ta.grouped(rows, "family") and ta.grouped(rows, "gpu_key")
    assert any(line.startswith("MOE_LAYER_S") for line in ta.constants())
