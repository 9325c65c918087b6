"""Serving speed of one vLLM replica: decode step time, TPOT, TTFT and throughput (sizing-notes §5.7).

One engine step runs the batch's decode tokens plus any prefill chunk (chunked prefill, V1). Its time is
the sum of: linear layers (roofline max of weight bytes / bandwidth and FLOPs / the weight format's
kernel throughput), attention (KV bytes read, prefill FLOPs), TP all-reduces, and a CPU/launch floor
(scheduler, sampler, per-layer graph replay, per-sequence bookkeeping). Constants were fitted on
shared/validation/vllm_bench_results.json (bench/throughput_accuracy.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from toolkit.catalog.spec import GpuSpec, ModelSpec, QuantSpec
from toolkit.sizing.params import moe_layer_count, param_breakdown
from toolkit.sizing.weights import WeightBytes

# --- fitted / physical constants (printed by assumptions()) -------------------------------------
BANDWIDTH_EFFICIENCY = 0.80  # share of datasheet HBM bandwidth decode GEMV/attention kernels stream at
# Share of the peak tensor throughput each kernel family reaches in large-batch GEMMs.
COMPUTE_EFFICIENCY = {
    "bf16": 0.55,  # cuBLAS/CUTLASS bf16 GEMM
    "fp8": 0.51,  # W8A8 FP8 GEMM (per-tensor/block-scaled CUTLASS)
    "weight_only": 0.4,  # Marlin-style W4A16/W8A16/MXFP4-on-Hopper: bf16 math plus in-kernel dequantization
}
# Grouped expert GEMMs (few tokens per expert) reach a smaller share of the family's peak than dense GEMMs,
# by MoE kernel: triton fused_moe (bf16), block-FP8 fused_moe/DeepGEMM (fp8), MXFP4/INT4 weight-only
# (triton_kernels matmul_ogs on Hopper, Marlin MoE on Ampere/Ada), native FP4 (Blackwell/CDNA4).
MOE_COMPUTE_EFFICIENCY = {"bf16": 0.3, "fp8": 0.075, "weight_only": 0.3, "fp4": 0.3}  # fp8: block-scaled, TP-split experts (fit on DeepSeek-R1 only)
# Fixed cost per MoE layer per step: router top-k, align/sort, permute, expert-GEMM launches, activation
# quantisation (block-FP8 quantises activations per 128-group before every expert GEMM).
# bf16: the validation set has no low-batch bf16 MoE run, so it is set from a public single-user sweep
# outside it (Qwen3-30B-A3B, A100, vLLM, concurrency 1: TPOT 9.6 ms — tenstorrent/tt-inference-server#340).
MOE_LAYER_S = {"bf16": 75e-6, "fp8": 230e-6, "weight_only": 10e-6, "fp4": 230e-6}  # weight_only: matmul_ogs fuses routing/gather
ROOFLINE_SHARPNESS = 1.75  # t = (t_mem^p + t_flop^p)^(1/p): GEMMs near the ridge neither fully overlap nor add
ATTENTION_COMPUTE_EFFICIENCY = 0.26  # prefill FlashAttention on mixed chunked batches
AMD_EFFICIENCY = 0.63  # fitted on the one MI355X record (MXFP4 preview kernels); ROCm kernels reach a smaller share of datasheet bandwidth/FLOPs than CUDA ones
STEP_OVERHEAD_S = 0.0013  # per-step scheduler + sampler + input prep with CUDA graphs (V1)
PER_LAYER_S = 14.6e-6  # graph-replayed kernel chain per decoder layer (launch gaps, norms, small kernels)
EAGER_PER_LAYER_S = 150e-6  # --enforce-eager: ~10-15 kernels per layer launched from Python
PER_SEQ_S = 11e-6  # per running sequence per step: scheduling, sampling, detokenizing, output streaming
TTFT_OVERHEAD_S = 0.055  # HTTP + chat template + tokenization + first-token streaming (API server)
ALLREDUCE_LATENCY_S = {"nvlink": 10e-6, "pcie": 35e-6}  # one custom/NCCL all-reduce, small message
CPU_BANDWIDTH_GBS = 100.0  # a few DDR5 channels; CPU decode is bandwidth-bound too
CPU_BANDWIDTH_EFFICIENCY = 0.6  # llama.cpp/vLLM-CPU typically stream ~60% of STREAM bandwidth
CPU_FLOPS = 2e12  # AVX-512/AMX bf16 throughput of a server socket, order of magnitude
DEFAULT_OUTPUT_LEN_CV = 1.0  # chat traffic: output lengths roughly exponential (ShareGPT-like)


@dataclass(frozen=True)
class Speed:
    step_s: float
    """Decode step time at this batch (no prefill in the step), seconds."""
    tokens_per_s: float
    """Aggregate output tokens/s of the replica."""
    per_user_tokens_per_s: float
    """1 / TPOT: what one user sees while streaming."""
    batch: int
    """Sequences decoding together."""
    ttft_s: float = 0.0
    """Mean time to first token, seconds (for saturation: includes queueing when num_requests is given)."""
    tpot_s: float = 0.0
    """Mean time per output token after the first, prefill interference included (vLLM's TPOT)."""
    requests_per_s: float = 0.0
    """Completed requests per second."""


def experts_touched(num_experts: int, top_k: int, tokens: float) -> float:
    """Expected distinct experts a layer reads for `tokens` tokens under uniform routing."""
    return num_experts * (1 - (1 - top_k / num_experts) ** max(tokens, 0.0))


def kernel_family(gpu: GpuSpec | None, quant: QuantSpec | None) -> str:
    """Which GEMM family vLLM runs for this weight format on this GPU generation."""
    name = (quant.name if quant is not None else "none").lower()
    if gpu is None or name in ("none", "", "bf16", "fp16"):
        return "bf16"
    if name.startswith("fp8") or name in ("int8", "w8a8"):
        # W8A8 needs FP8/INT8 tensor cores (Ada/Hopper/Blackwell); Ampere runs FP8 weight-only via Marlin.
        return "fp8" if gpu.fp8_tflops else "weight_only"
    if name in ("mxfp4", "nvfp4") and getattr(gpu, "fp4_tflops", None):
        return "fp4"  # native FP4 tensor cores (Blackwell)
    return "weight_only"  # AWQ/GPTQ Marlin, MXFP4 via Marlin/triton on Hopper/Ampere, GGUF, bnb


def _peak_flops(gpu: GpuSpec, family: str) -> float:
    if family == "fp8":
        return (gpu.fp8_tflops or gpu.bf16_tflops) * 1e12 * COMPUTE_EFFICIENCY["fp8"]
    if family == "fp4":
        return gpu.fp4_tflops * 1e12 * COMPUTE_EFFICIENCY["fp8"]
    return gpu.bf16_tflops * 1e12 * COMPUTE_EFFICIENCY[family]


def _roof(t_mem: float, t_flop: float) -> float:
    p = ROOFLINE_SHARPNESS
    return (t_mem**p + t_flop**p) ** (1 / p)


def _vendor(gpu: GpuSpec) -> float:
    return AMD_EFFICIENCY if gpu.vendor == "amd" else 1.0


def _link(gpu: GpuSpec) -> str:
    ic = gpu.interconnect.lower()
    return "nvlink" if ("nvlink" in ic and "bridge" not in ic) or "infinity" in ic or "xgmi" in ic else "pcie"


@dataclass(frozen=True)
class _Replica:
    """Per-rank quantities that do not depend on the batch."""

    model: ModelSpec
    gpu: GpuSpec | None
    tp: int
    pp: int
    dense_bytes: float  # non-expert weight bytes one rank reads per step (one stage)
    expert_bytes: float  # routed-expert bytes on one rank (one stage), all experts
    active_linear: float  # non-expert active params per rank per stage (FLOPs/token = 2x)
    active_expert: float  # routed-expert active params per rank per stage
    kv_token: float  # KV bytes per token per rank (one stage)
    family: str
    layers: int  # decoder layers per stage
    attn_flops_token_ctx: float  # attention FLOPs per (query token x context token) per rank per stage
    eager: bool
    moe_layers: int = 0  # MoE layers per stage

    def step(self, decodes: float, prefill: float, ctx: float, prefill_ctx: float = 0.0) -> float:
        """One engine step of one pipeline stage: `decodes` sequences at mean context `ctx` plus a
        `prefill` chunk whose tokens attend to `prefill_ctx` earlier tokens on average."""
        n = decodes + prefill
        m = self.model
        if self.gpu is None:
            bw = CPU_BANDWIDTH_GBS * 1e9 * CPU_BANDWIDTH_EFFICIENCY
            flops = CPU_FLOPS
            lin_flops = flops
            vendor = 1.0
        else:
            vendor = _vendor(self.gpu)
            bw = self.gpu.bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY * vendor
            flops = self.gpu.bf16_tflops * 1e12 * vendor
            lin_flops = _peak_flops(self.gpu, self.family) * vendor
        expert_read = 0.0
        if m.moe is not None and self.expert_bytes:
            expert_read = self.expert_bytes * experts_touched(m.moe.num_experts, m.moe.experts_per_token, n) / m.moe.num_experts
        t_lin = _roof(
            (self.dense_bytes + expert_read) / bw,
            2 * n * (self.active_linear + self.active_expert / MOE_COMPUTE_EFFICIENCY[self.family]) / lin_flops,
        )
        # Decoders each read their whole context; a prefill chunk reads the earlier context once (tiled).
        kv_read = (decodes * ctx + ((prefill_ctx + prefill) if prefill else 0.0)) * self.kv_token
        attn_flops = self.attn_flops_token_ctx * (decodes * ctx + prefill * prefill_ctx)
        eff = ATTENTION_COMPUTE_EFFICIENCY if self.gpu is not None else 1.0
        t_attn = max(kv_read / bw, attn_flops / (flops * eff))
        t_comm = 0.0
        if self.tp > 1 and self.gpu is not None:
            msg = n * m.hidden_size * 2
            per = ALLREDUCE_LATENCY_S[_link(self.gpu)] + 2 * (self.tp - 1) / self.tp * msg / (self.gpu.interconnect_gbs * 1e9)
            t_comm = 2 * self.layers * per
        per_layer = EAGER_PER_LAYER_S if self.eager else PER_LAYER_S
        moe_layers = self.moe_layers if m.moe is not None else 0
        t_cpu = self.layers * per_layer + moe_layers * MOE_LAYER_S[self.family] + PER_SEQ_S * decodes
        return t_lin + t_attn + t_comm + t_cpu


def _replica(model: ModelSpec, wb: WeightBytes, gpu: GpuSpec | None, quant: QuantSpec | None, tp: int, pp: int,
             kv_bytes_per_token: float, eager: bool = False) -> _Replica:
    shard = tp * pp
    p = param_breakdown(model)
    share = model.moe.experts_per_token / model.moe.num_experts if model.moe is not None else 0.0
    active_expert = p.experts * share
    active_linear = p.attention + p.dense_mlp + p.shared + p.lm_head + (p.embedding if model.tie_word_embeddings else 0)
    layers = math.ceil(model.num_hidden_layers / pp)
    full_layers = sum(1 for k in model.attention_layers() if k == "full") or model.num_hidden_layers
    # QK^T and PV: 2 x 2 FLOPs per head-dim element per (query, key) pair, only full layers grow with context.
    attn = 4 * (model.num_attention_heads / tp) * model.head_dim * math.ceil(full_layers / pp)
    return _Replica(
        model=model, gpu=gpu, tp=tp, pp=pp,
        dense_bytes=(wb.total - wb.experts - wb.vision) / shard,
        expert_bytes=wb.experts / shard,
        active_linear=active_linear / shard,
        active_expert=active_expert / shard,
        kv_token=kv_bytes_per_token,
        family=kernel_family(gpu, quant),
        layers=layers,
        attn_flops_token_ctx=attn,
        eager=eager,
        moe_layers=math.ceil(moe_layer_count(model) / pp) if model.moe is not None else 0,
    )


def _decode_step(r: _Replica, batch: float, ctx: float, prefill: float = 0.0, prefill_ctx: float = 0.0) -> float:
    """Wall time of one replica step: PP stages run one after another for a step, plus the CPU floor."""
    return r.step(batch, prefill, ctx, prefill_ctx) * r.pp + STEP_OVERHEAD_S


def engine_defaults(gpu: GpuSpec | None) -> tuple[int, int]:
    """vLLM V1 API-server defaults (max_num_seqs, max_num_batched_tokens): 1024/8192 on GPUs with
    >= 70 GiB that are not A100s, else 256/2048 (vllm/engine/arg_utils.py)."""
    if gpu is not None and gpu.memory_gib >= 70 and "a100" not in gpu.name.lower():
        return 1024, 8192
    return 256, 2048


def _prefill_time(r: _Replica, prompt: float, decodes: float, ctx: float, budget: int) -> float:
    """Time to prefill one `prompt`-token request in chunks that share steps with `decodes` decoders."""
    chunk = max(64.0, budget - decodes)
    steps = max(1, math.ceil(prompt / chunk))
    per = prompt / steps
    return sum(_decode_step(r, decodes, ctx, per, per * (i + 0.5)) for i in range(steps))


def _decay_time(r: _Replica, n: float, prompt: float, out: float, cv: float) -> float:
    """Decode time for `n` requests that start together and finish by their output lengths: fixed
    lengths (cv 0) keep the batch full; exponential lengths (cv 1) make it decay as n*exp(-s/out)."""
    if out <= 1:
        return 0.0
    if cv <= 0.05:
        return (out - 1) * _decode_step(r, n, prompt + out / 2)
    # Blend of fixed and exponential: survival S(s) = exp(-s/out) (cv 1); integrate step times over s.
    s_max = out * max(1.0, math.log(max(n, 1.0)))
    grid = 48
    total = 0.0
    for i in range(grid):
        s = (i + 0.5) * s_max / grid
        b = max(1.0, n * math.exp(-s / out))
        total += _decode_step(r, b, prompt + min(s, out)) * s_max / grid
    fixed = (out - 1) * _decode_step(r, n, prompt + out / 2)
    return cv * total + (1 - cv) * fixed


def serving_speed(
    model: ModelSpec,
    wb: WeightBytes,
    gpu: GpuSpec | None,
    quant: QuantSpec | None,
    *,
    tp: int,
    pp: int,
    concurrency: int | None,
    input_tokens: float,
    output_tokens: float,
    kv_bytes_per_token: float,
    kv_capacity_tokens: float | None = None,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    num_requests: int | None = None,
    output_len_cv: float = DEFAULT_OUTPUT_LEN_CV,
    enforce_eager: bool = False,
) -> Speed:
    """Speed of one replica serving `concurrency` users in a closed loop (None: no client cap, the
    engine batch is bounded by max_num_seqs and the KV cache). `num_requests` (saturation only): a
    finite burst sent at once, whose tail of long requests runs at a shrinking batch; None = steady state."""
    r = _replica(model, wb, gpu, quant, tp, pp, kv_bytes_per_token, enforce_eager)
    seqs_default, mbt_default = engine_defaults(gpu)
    mns = max_num_seqs or seqs_default
    mbt = max_num_batched_tokens or mbt_default
    prompt = max(1.0, float(input_tokens))
    out = max(1.0, float(output_tokens))
    kv_limit = float("inf")
    if kv_capacity_tokens:
        kv_limit = max(1.0, kv_capacity_tokens / (prompt + out))
    engine_cap = max(1, int(min(mns, kv_limit)))

    if concurrency is not None:
        b = max(1, min(int(concurrency), engine_cap))
        ctx = prompt + out / 2
        decode = _decode_step(r, b, ctx)
        # Each other user's prefill lands in our decode steps: (b - 1) prefills during our (out - 1) steps.
        prefill_alone = _prefill_time(r, prompt, b - 1, ctx, mbt)
        interference = max(0.0, prefill_alone - math.ceil(prompt / max(64.0, mbt - b + 1)) * _decode_step(r, b - 1, ctx))
        tpot = decode + (b - 1) * interference / max(out - 1, 1.0)
        ttft = TTFT_OVERHEAD_S + prefill_alone + (decode / 2 if b > 1 else 0.0)
        e2e = ttft + (out - 1) * tpot
        rps = b / e2e
        return Speed(decode, rps * out, 1 / tpot, b, ttft, tpot, rps)

    # Saturation: the engine runs as many sequences as max_num_seqs and the KV cache allow.
    n = float(num_requests) if num_requests else float("inf")
    b = min(engine_cap, n)
    ctx = prompt + out / 2
    if math.isinf(n):
        # Steady state: every step admits b/out new requests whose prefill shares the step.
        step = _decode_step(r, b, ctx, b * prompt / out, prompt / 2)
        tpot = step
        rps = b / (out * step)
        ttft = TTFT_OVERHEAD_S + _prefill_time(r, prompt, b, ctx, mbt)
        return Speed(_decode_step(r, b, ctx), rps * out, 1 / tpot, int(b), ttft, tpot, rps)
    # Finite burst: prefill the first wave in max_num_batched_tokens chunks, run the queue through at
    # full batch, then drain the last wave with a shrinking batch.
    wave_pf_steps = max(1, math.ceil(b * prompt / mbt))
    t_wave_pf = wave_pf_steps * _decode_step(r, 0, 0, min(mbt, b * prompt), prompt / 2)
    queued = max(0.0, n - b)
    steady = _decode_step(r, b, ctx, b * prompt / out, prompt / 2)
    t_queue = queued * out * steady / b
    t_tail = _decay_time(r, b, prompt, out, output_len_cv)
    total = t_wave_pf + t_queue + t_tail
    rps = n / total
    # TPOT also absorbs the first wave's prefill for requests that got their first token early.
    tpot = (t_queue + t_tail + b * t_wave_pf / 2 / max(b, 1)) / max(1.0, (queued / b + 1) * (out - 1)) if out > 1 else steady
    # Mean TTFT: the first wave waits on average half its prefill; queued requests wait for slots.
    ttft_wave = TTFT_OVERHEAD_S + t_wave_pf / 2
    ttft_queued = t_wave_pf + t_queue / 2 + TTFT_OVERHEAD_S
    ttft = (b * ttft_wave + queued * ttft_queued) / n
    return Speed(_decode_step(r, b, ctx), rps * out, 1 / tpot, int(b), ttft, tpot, rps)


def assumptions(gpu: GpuSpec | None, context: int, quant: QuantSpec | None = None) -> list[str]:
    """Human-readable list of every constant the speed model used."""
    if gpu is None:
        return [
            f"CPU memory bandwidth {CPU_BANDWIDTH_GBS:g} GB/s × {CPU_BANDWIDTH_EFFICIENCY}, {CPU_FLOPS / 1e12:g} TFLOPS",
            f"mean context {context} tokens",
        ]
    fam = kernel_family(gpu, quant)
    lines = [
        f"decode reads weights + KV at {gpu.bandwidth_gbs:g} GB/s × {BANDWIDTH_EFFICIENCY} efficiency",
        f"linear layers: {fam} kernels at {COMPUTE_EFFICIENCY.get(fam, COMPUTE_EFFICIENCY['fp8'])} of peak "
        f"(MoE grouped GEMM × {MOE_COMPUTE_EFFICIENCY[fam]}, {MOE_LAYER_S[fam] * 1e6:g} µs fixed per MoE layer); prefill attention at {ATTENTION_COMPUTE_EFFICIENCY} of bf16 peak",
        f"mean context {context} tokens read from KV each step (prompt + half the output)",
        "MoE: uniform routing, distinct experts read per step = E·(1−(1−k/E)^tokens)",
        f"TP: 2 all-reduces per layer, {ALLREDUCE_LATENCY_S[_link(gpu)] * 1e6:g} µs each + bytes over {gpu.interconnect_gbs:g} GB/s",
        f"CPU floor per step {STEP_OVERHEAD_S * 1000:.1f} ms + {PER_LAYER_S * 1e6:g} µs/layer "
        f"({EAGER_PER_LAYER_S * 1e6:g} µs eager) + {PER_SEQ_S * 1e6:g} µs per running sequence",
        f"TTFT adds {TTFT_OVERHEAD_S * 1000:.0f} ms API-server overhead; other users' prefills slow every decode step",
    ]
    if gpu.vendor == "amd":
        lines.append(f"ROCm kernels at {AMD_EFFICIENCY} of the CUDA efficiencies")
    return lines
