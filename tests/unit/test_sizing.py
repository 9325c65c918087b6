"""Sizing engine against worked examples (sizing-notes §5) — data-driven from cases/sizing/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from toolkit import catalog
from toolkit.sizing import kv, throughput
from toolkit.sizing.params import param_breakdown
from toolkit.sizing.weights import weight_bytes

CASES = yaml.safe_load((Path(__file__).parent / "cases" / "sizing" / "worked_examples.yml").read_text())
GIB = 1024**3


@pytest.mark.parametrize("case", CASES["weights_total"], ids=lambda c: f"{c['model']}-{c['quant']}")
def test_weights_total(case):
    total = weight_bytes(catalog.model(case["model"]), catalog.quant(case["quant"])).total
    expected = case["gb"] * 1e9 if "gb" in case else case["gib"] * GIB
    assert total == pytest.approx(expected, rel=case["tol"])


@pytest.mark.parametrize("case", CASES["kv_bytes_per_token"], ids=lambda c: c["model"])
def test_kv_bytes_per_token(case):
    spec = catalog.model(case["model"])
    assert kv.bytes_per_token(spec, tp=1, pp=1, b_kv=2) == pytest.approx(case["kib"] * 1024, rel=0.001)


@pytest.mark.parametrize("case", CASES["kv_full_layers_per_token"], ids=lambda c: c["model"])
def test_kv_full_layers(case):
    spec = catalog.model(case["model"])
    full = kv.layers_on_rank(spec, 1)["full"]
    assert full * kv.bytes_per_token_layer(spec, 1, 2) == case["kib"] * 1024


def test_sliding_window_is_bounded_per_request():
    spec = catalog.model("openai/gpt-oss-120b")
    short = kv.request_bytes(spec, 4096, tp=1, pp=1, b_kv=2, batched_tokens=2048, block=16)
    long = kv.request_bytes(spec, 131072, tp=1, pp=1, b_kv=2, batched_tokens=2048, block=16)
    # Growing the context only grows the full-attention layers. By hand (config.json): 36 layers, every
    # second one full (18); per layer and token K + V = 2 × 8 KV heads × 64 head_dim × 2 bytes = 2,048 B.
    # 18 × (131,072 − 4,096) × 2,048 B = 4,681,826,304 B (4.36 GiB); the 18 sliding layers add nothing.
    assert long - short == pytest.approx(4_681_826_304, rel=0.001)


@pytest.mark.parametrize("case", CASES["kv_tp_replication"], ids=lambda c: f"{c['model']}-tp{c['tp']}")
def test_kv_heads_replicated_when_tp_exceeds_kv_heads(case):
    assert kv.kv_heads_per_rank(catalog.model(case["model"]), case["tp"]) == case["kvh_rank"]


def test_mla_kv_is_not_divided_by_tp():
    # MLA caches one latent per token and layer: (kv_lora_rank 512 + rope dim 64) × 2 bytes = 1,152 B,
    # the same on every rank (there are no KV heads to split).
    spec = catalog.model("deepseek-ai/DeepSeek-V3")
    assert kv.bytes_per_token_layer(spec, 8, 2) == kv.bytes_per_token_layer(spec, 1, 2) == 1152


def test_fp8_kv_halves_bytes():
    # 2 (K, V) × 32 layers × 8 KV heads × 128 head_dim × 1 byte = 65,536 B = 64 KiB (bf16: 128 KiB).
    spec = catalog.model("meta-llama/Llama-3.1-8B-Instruct")
    assert kv.bytes_per_token(spec, tp=1, pp=1, b_kv=kv.kv_dtype_bytes("fp8")) == 64 * 1024


@pytest.mark.parametrize("case", CASES["expert_coverage"], ids=lambda c: f"B{c['batch']}")
def test_expert_coverage(case):
    assert round(throughput.experts_touched(256, 8, case["batch"])) == case["experts"]


@pytest.mark.parametrize("case", CASES["decode_single_stream"], ids=lambda c: f"{c['quant']}-tp{c['tp']}")
def test_decode_single_stream(case):
    spec, q, gpu = catalog.model(case["model"]), catalog.quant(case["quant"]), catalog.gpu(case["gpu"])
    # One user, a one-token prompt, no KV read: the serving model's 1/TPOT is the bare decode step.
    speed = throughput.serving_speed(spec, weight_bytes(spec, q), gpu, q, tp=case["tp"], pp=1, concurrency=1,
                                     input_tokens=1, output_tokens=1, kv_bytes_per_token=0)
    assert speed.per_user_tokens_per_s == pytest.approx(case["tok_s"], rel=case["tol"])


def test_catalog_geometry_matches_published_parameter_counts():
    """A transcription error in a config field shows up as a parameter-count mismatch."""
    misses = []
    for spec in catalog.models():
        derived = param_breakdown(spec).total / 1e9
        if abs(derived - spec.params_b) / spec.params_b > 0.03:
            misses.append(f"{spec.id}: {derived:.2f} B derived vs {spec.params_b} B published")
    assert not misses, "\n".join(misses)


def test_moe_active_parameters():
    spec = catalog.model("Qwen/Qwen3-30B-A3B")
    assert param_breakdown(spec).active(spec) / 1e9 == pytest.approx(3.3, rel=0.1)
