"""Decode speed: memory-bandwidth bound, with MoE expert coverage and TP all-reduce (sizing-notes §5.7)."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.sizing.params import param_breakdown
from toolkit.sizing.weights import WeightBytes
from toolkit.catalog.spec import GpuSpec, ModelSpec

# Assumed efficiencies (overridable; printed with every estimate).
BANDWIDTH_EFFICIENCY = 0.70  # vLLM with CUDA graphs on data-center GPUs measures ≈0.6–0.8
COMPUTE_EFFICIENCY = 0.40  # share of dense tensor FLOPS reached in decode GEMMs
STEP_OVERHEAD_S = 0.0006  # scheduler + sampler per step with CUDA graphs
ALLREDUCE_LATENCY_S = {"nvlink": 8e-6, "pcie": 30e-6}
CPU_BANDWIDTH_GBS = 100.0  # a few DDR5 channels; CPU decode is bandwidth-bound too


@dataclass(frozen=True)
class Speed:
    step_s: float
    tokens_per_s: float
    per_user_tokens_per_s: float
    batch: int


def experts_touched(num_experts: int, top_k: int, batch: int) -> float:
    """Expected distinct experts a layer reads for `batch` tokens under uniform routing."""
    return num_experts * (1 - (1 - top_k / num_experts) ** batch)


def decode_speed(
    model: ModelSpec,
    wb: WeightBytes,
    gpu: GpuSpec | None,
    *,
    tp: int,
    pp: int,
    batch: int,
    context: int,
    kv_bytes_per_token: float,
) -> Speed:
    """Time of one decode step for `batch` sequences at mean context `context`, and the tokens/s it gives."""
    batch = max(1, batch)
    dense = (wb.total - wb.experts) / (tp * pp)
    experts = 0.0
    if model.moe is not None and wb.experts:
        touched = experts_touched(model.moe.num_experts, model.moe.experts_per_token, batch)
        experts = wb.experts * touched / model.moe.num_experts / (tp * pp)
    kv_read = batch * context * kv_bytes_per_token
    bytes_step = dense + experts + kv_read
    if gpu is None:
        t_mem = bytes_step / (CPU_BANDWIDTH_GBS * 1e9 * BANDWIDTH_EFFICIENCY)
        t = t_mem * pp + STEP_OVERHEAD_S
        return Speed(t, batch / t, 1 / t, batch)
    t_mem = bytes_step / (gpu.bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY)
    active = param_breakdown(model).active(model)
    t_comp = 2 * active * batch / (tp * pp * gpu.bf16_tflops * 1e12 * COMPUTE_EFFICIENCY)
    t_comm = 0.0
    if tp > 1:
        link = "nvlink" if "nvlink" in gpu.interconnect.lower() or "infinity" in gpu.interconnect.lower() else "pcie"
        msg = batch * model.hidden_size * 2
        per = ALLREDUCE_LATENCY_S[link] + 2 * (tp - 1) / tp * msg / (gpu.interconnect_gbs * 1e9)
        t_comm = 2 * model.num_hidden_layers * per
    # Pipeline stages run one after another for a single step of one sequence group.
    t = (max(t_mem, t_comp) + t_comm / pp) * pp + STEP_OVERHEAD_S
    return Speed(t, batch / t, 1 / t, batch)


def assumptions(gpu: GpuSpec | None, context: int) -> list[str]:
    if gpu is None:
        return [f"CPU memory bandwidth {CPU_BANDWIDTH_GBS:g} GB/s × {BANDWIDTH_EFFICIENCY}", f"mean context {context} tokens"]
    return [
        f"memory-bandwidth bound decode: {gpu.bandwidth_gbs:g} GB/s × efficiency {BANDWIDTH_EFFICIENCY}",
        f"compute ceiling {gpu.bf16_tflops:g} TFLOPS × {COMPUTE_EFFICIENCY}",
        f"mean context {context} tokens read from KV each step",
        "MoE: uniform expert routing; TP: ring all-reduce twice per layer",
        f"{STEP_OVERHEAD_S * 1000:.1f} ms scheduler/sampler per step (CUDA graphs on)",
    ]
