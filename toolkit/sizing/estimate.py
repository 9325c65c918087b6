"""vLLM's start-up budget for one exact layout (sizing-notes §5.3): does it fit, and what KV is left.

    requested = total × gpu_memory_utilization
    kv_pool   = requested − weights − LoRA buffers − activation peak − non-torch (− CUDA graphs when budgeted)
    fits      = layout valid ∧ startup check ∧ kv_pool holds one max_model_len request ∧ graph headroom ≥ 0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from toolkit.sizing.results import Capacity, MemoryBreakdown
from toolkit.sizing import engine, kv
from toolkit.sizing.engine import GIB, EngineProfile
from toolkit.sizing.lora import LoraMemory, LoraSettings, lora_memory
from toolkit.sizing.weights import WeightBytes, per_rank_bytes, weight_bytes
from toolkit.catalog.spec import GpuSpec, ModelSpec, QuantSpec

CPU_RUNTIME_OVERHEAD_GIB = 2.0  # Python, torch and oneDNN workspaces on a CPU server


@dataclass(frozen=True)
class Settings:
    """Engine arguments; None means "what vLLM would pick". The user-settable ones are declared (type,
    default, help) in `toolkit.plan.vllm_args.KNOBS`; tests/unit/test_knobs.py keeps these in step."""

    max_model_len: int
    gpu_memory_utilization: float | None = None
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    kv_cache_dtype: str = "auto"
    enforce_eager: bool = False
    cpu_kv_space_gib: float | None = None
    lora: LoraSettings | None = None
    """`--enable-lora` settings; None = LoRA off."""


@dataclass(frozen=True)
class Device:
    memory_gib: float
    """GPU memory as the runtime reports it, or host RAM for the CPU backend."""
    gpu: GpuSpec | None = None
    kind: str = "gpu"


@dataclass
class Estimate:
    fits: bool
    reasons: list[str]
    memory: MemoryBreakdown
    capacity: Capacity
    gpu_memory_utilization: float | None
    max_num_batched_tokens: int
    max_num_seqs: int
    block_size: int
    weights: WeightBytes
    layout_ok: bool = True
    """vLLM would accept the layout (heads, alignment, compute capability)."""
    lora: LoraMemory | None = None
    """LoRA buffers (per rank) and the host-RAM adapter cache, when LoRA is on."""


def layout_problems(model: ModelSpec, quant: QuantSpec, tp: int, pp: int, gpu: GpuSpec | None) -> list[str]:
    """Why vLLM would refuse this layout at load time (sizing-notes §4.7, §5.6.1)."""
    out = []
    if model.num_attention_heads % tp:
        out.append(f"{model.num_attention_heads} attention heads are not divisible by tensor parallel size {tp}")
    kvh = model.num_key_value_heads
    if model.mla is None and kvh % tp and tp % kvh:
        out.append(f"{kvh} KV heads cannot be split or replicated evenly over tensor parallel size {tp}")
    if pp > model.num_hidden_layers:
        out.append(f"pipeline parallel size {pp} exceeds the {model.num_hidden_layers} layers")
    if quant.group_size and tp > 1:
        dims = {"intermediate_size": model.intermediate_size}
        if model.moe:
            dims["moe_intermediate_size"] = model.moe.moe_intermediate_size
        for name, size in dims.items():
            if (size // tp) % quant.group_size or size % tp:
                out.append(
                    f"{quant.name} group size {quant.group_size} does not align with {name} {size}/TP {tp} "
                    f"(vLLM: 'input size is not aligned with the quantized weight shape')"
                )
    if gpu is not None and gpu.vendor == "nvidia":
        cc = gpu.compute_capability
        if cc < quant.min_compute_capability:
            out.append(f"{quant.name} needs compute capability ≥ {quant.min_compute_capability}; {gpu.name} is {cc}")
        if quant.max_compute_capability is not None and cc > quant.max_compute_capability:
            out.append(f"{quant.name} has no kernels above compute capability {quant.max_compute_capability}; {gpu.name} is {cc}")
    if gpu is not None and tp * pp > gpu.max_per_node and tp > gpu.max_per_node:
        out.append(f"tensor parallel size {tp} exceeds the {gpu.max_per_node} {gpu.name} GPUs one server holds")
    return out


def estimate(
    model: ModelSpec,
    quant: QuantSpec,
    device: Device,
    settings: Settings,
    *,
    tp: int = 1,
    pp: int = 1,
    profile: EngineProfile | None = None,
    exact_weight_bytes: int | None = None,
) -> Estimate:
    profile = profile or engine.engine_profile()
    gpu_name = device.gpu.name if device.gpu else None
    d_tokens, d_seqs = engine.batch_defaults(profile, gpu_name, device.memory_gib, settings.max_model_len)
    T = settings.max_num_batched_tokens or d_tokens
    seqs = settings.max_num_seqs or d_seqs
    block = 64 if model.mla is not None and profile.v1 else profile.block_size
    b_kv = kv.kv_dtype_bytes(settings.kv_cache_dtype)
    wb = weight_bytes(model, quant)
    w_rank = per_rank_bytes(model, wb, tp, pp, exact_weight_bytes)
    reasons = layout_problems(model, quant, tp, pp, device.gpu)
    layout_ok = not reasons
    total = device.memory_gib * GIB
    lora = lora_memory(model, settings.lora, tp=tp, pp=pp, max_num_batched_tokens=T, max_num_seqs=seqs) if settings.lora else None
    lora_b = float(lora.gpu_bytes) if lora else 0.0

    if device.kind == "cpu":
        gmu = None
        act = nt = graphs = 0.0
        kv_space = (settings.cpu_kv_space_gib or 4.0) * GIB
        requested = kv_space
        pool = kv_space
        lora_host = lora_b + (lora.host_bytes if lora else 0)  # CPU: LoRA buffers and adapter cache are host RAM
        headroom = total - w_rank - kv_space - CPU_RUNTIME_OVERHEAD_GIB * GIB - lora_host
        if headroom < 0:
            reasons.append(
                f"host RAM {device.memory_gib:.1f} GiB < weights {w_rank / GIB:.2f} + KV space {kv_space / GIB:.1f} "
                f"+ runtime {CPU_RUNTIME_OVERHEAD_GIB:.0f} GiB" + (f" + LoRA {lora_host / GIB:.2f} GiB" if lora else "")
            )
    else:
        gmu = settings.gpu_memory_utilization or profile.gpu_memory_utilization
        requested = total * gmu
        act = engine.activation_peak_bytes(model, profile, batched_tokens=T, max_num_seqs=seqs, tp=tp)
        nt = engine.non_torch_bytes(tp)
        graphs = engine.cuda_graph_bytes(model, pp=pp, enforce_eager=settings.enforce_eager)
        # LoRA buffers are allocated while the model loads ("Model loading took …"), so they leave the KV pool
        pool = requested - w_rank - lora_b - act - nt - (graphs if profile.graphs_in_budget else 0.0)
        outside = engine.CUDA_CONTEXT_GIB * GIB + engine.SAFETY_MARGIN_GIB * GIB
        headroom = total - requested - outside - (0.0 if profile.graphs_in_budget else graphs)
        if total - engine.CUDA_CONTEXT_GIB * GIB < requested:
            reasons.append(
                f"gpu_memory_utilization {gmu:g} asks for {requested / GIB:.2f} GiB but only "
                f"{(total / GIB - engine.CUDA_CONTEXT_GIB):.2f} GiB is free after the CUDA context"
            )
        elif headroom < 0:
            reasons.append(
                f"only {(total - requested) / GIB:.2f} GiB left outside the budget for CUDA graphs "
                f"({graphs / GIB:.2f} GiB) and the CUDA context: lower --gpu-memory-utilization or use --enforce-eager"
            )
        if pool <= 0:
            reasons.append(
                (f"LoRA buffers {lora_b / GIB:.2f} GiB + " if lora else "") +
                f"weights {w_rank / GIB:.2f} GiB + activations {act / GIB:.2f} GiB + overhead {nt / GIB:.2f} GiB "
                f"exceed the {requested / GIB:.2f} GiB budget per GPU"
            )

    per_req = kv.request_bytes(model, settings.max_model_len, tp=tp, pp=pp, b_kv=b_kv, batched_tokens=T, block=block)
    per_tok = kv.bytes_per_token(model, tp=tp, pp=pp, b_kv=b_kv)
    pool_pos = max(pool, 0.0)
    concurrency = pool_pos / per_req if per_req else 0.0
    if kv.is_uniform(model):
        n_blocks = int(pool_pos // (per_tok * block)) if per_tok else 0
        tokens = n_blocks * block
        max_len = tokens
    else:
        tokens = int(concurrency * settings.max_model_len)
        max_len = _longest_context(model, pool_pos, tp=tp, pp=pp, b_kv=b_kv, T=T, block=block)
    if pool > 0 and per_req > pool:
        reasons.append(
            f"one request at max_model_len {settings.max_model_len} needs {per_req / GIB:.2f} GiB of KV cache, "
            f"only {pool / GIB:.2f} GiB is available (longest context that fits: {max_len})"
        )

    memory = MemoryBreakdown(
        total_gib=_g(total),
        requested_gib=_g(requested),
        weights_gib=_g(w_rank),
        activation_gib=_g(act),
        non_torch_gib=_g(nt),
        cuda_graph_gib=_g(graphs),
        lora_gib=_g(lora_b),
        kv_cache_gib=_g(pool),
        headroom_gib=_g(headroom),
    )
    capacity = Capacity(
        kv_cache_tokens=max(tokens, 0),
        max_model_len=settings.max_model_len,
        max_model_len_possible=min(max_len, model.max_position_embeddings),
        max_concurrency=round(concurrency, 2),
        kv_bytes_per_token=int(per_tok),
    )
    return Estimate(
        fits=not reasons,
        reasons=reasons,
        memory=memory,
        capacity=capacity,
        gpu_memory_utilization=gmu,
        max_num_batched_tokens=T,
        max_num_seqs=seqs,
        block_size=block,
        weights=wb,
        layout_ok=layout_ok,
        lora=lora,
    )


def _longest_context(model: ModelSpec, pool: float, **kw) -> int:
    """Largest context whose single request fits the pool (vLLM's "estimated maximum model length")."""
    lo, hi = 0, model.max_position_embeddings
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if kv.request_bytes(model, mid, tp=kw["tp"], pp=kw["pp"], b_kv=kw["b_kv"], batched_tokens=kw["T"], block=kw["block"]) <= pool:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _g(x: float) -> float:
    return round(x / GIB, 2) if math.isfinite(x) else 0.0
