"""What vLLM itself spends beside weights and KV: defaults per version, activation peak, overheads.

Constants marked CALIBRATED were fitted on the public start-up logs in
`shared/validation/vllm_startup_logs.json` (see `bench/sizing_accuracy.py`); the rest are vLLM's
own defaults read from its source (sizing-notes §4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolkit.errors import PlanError
from toolkit.sizing.kv import cdiv
from toolkit.catalog.spec import ModelSpec

GIB = 1024**3


@dataclass(frozen=True)
class EngineProfile:
    """How one vLLM release budgets memory."""

    version: str
    gpu_memory_utilization: float
    """Default `--gpu-memory-utilization` (0.92 from v0.25, 0.90 before)."""
    v1: bool
    """V1 engine: chunked prefill always on, sampler warm-up inside the profile."""
    graphs_in_budget: bool
    """CUDA-graph memory is estimated and subtracted from the KV budget (newer releases)."""
    block_size: int = 16
    """Default KV block size in tokens (MLA backends use 64)."""


def _version_tuple(version: str) -> tuple[int, int]:
    digits = "".join(c if c.isdigit() or c == "." else " " for c in version).split()
    parts = (digits[0] if digits else "0.32").split(".")
    return int(parts[0] or 0), int(parts[1]) if len(parts) > 1 and parts[1] else 0


# Releases selfhost can plan for: (first, last) minor versions with the same memory behaviour, and what
# sets the range apart. The last range ends at the pinned release (plan/vllm_args.py VLLM_VERSION); a newer
# vLLM may change its defaults, so it is refused rather than guessed.
PROFILE_RANGES: tuple[tuple[tuple[int, int], tuple[int, int], str], ...] = (
    ((0, 6), (0, 7), "V0 engine"),
    ((0, 8), (0, 13), "V1 engine, CUDA graphs outside the KV budget"),
    ((0, 14), (0, 24), "CUDA graphs inside the KV budget"),
    ((0, 25), (0, 32), "default --gpu-memory-utilization 0.92"),
)
_RELEASE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[.+-]?(?:post|rc|dev)\d*)?$")


def known_profiles() -> str:
    """The plannable release ranges in one line (`0.6–0.7 (V0 engine), …`)."""
    return ", ".join(f"{a[0]}.{a[1]}–{b[0]}.{b[1]} ({what})" for a, b, what in PROFILE_RANGES)


def check_version(version: str) -> str:
    """The release normalized (`v0.10.2` → `0.10.2`); PlanError when no engine profile covers it."""
    text = str(version).strip()
    m = _RELEASE.match(text)
    if m:
        minor = (int(m.group(1)), int(m.group(2)))
        if any(first <= minor <= last for first, last, _ in PROFILE_RANGES):
            return text.lstrip("v") if m.group(3) is not None else f"{minor[0]}.{minor[1]}.0"
    raise PlanError(f"no engine profile for vLLM '{version}': --vllm-version must be a release in {known_profiles()}")


def engine_profile(version: str = "0.32.0", *, v1: bool | None = None) -> EngineProfile:
    """The profile for a release string such as `0.32.0`, `~v0.6.4` or `0.10.2`."""
    major, minor = _version_tuple(version)
    at_least = lambda m: (major, minor) >= (0, m)  # noqa: E731
    return EngineProfile(
        version=version,
        gpu_memory_utilization=0.92 if at_least(25) else 0.90,
        v1=at_least(8) if v1 is None else v1,
        graphs_in_budget=at_least(14),
    )


def batch_defaults(profile: EngineProfile, gpu_name: str | None, memory_gib: float, max_model_len: int) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) vLLM picks when not given (EngineArgs.get_batch_defaults)."""
    if not profile.v1:
        # V0: chunked prefill off up to 32k, so the whole context is one profiled batch.
        tokens = max(max_model_len, 2048) if max_model_len <= 32768 else 2048
        return tokens, 256
    big = memory_gib >= 70 and not (gpu_name or "").upper().startswith("A100")
    return (8192, 1024) if big else (2048, 256)


# CALIBRATED: share of one layer's per-token intermediates alive at the profiled peak, and the
# multiple of the fp32 logits buffer the sampler warm-up holds (logits, probs, sort buffers).
ACT_FORWARD_SHARE = {True: 0.25, False: 0.85}
SAMPLER_LOGIT_COPIES = {True: 9.2, False: 1.0}
# CALIBRATED: allocations outside PyTorch's allocator (cuBLAS workspaces, NCCL, all-reduce buffers).
NON_TORCH_BASE_GIB = 0.15
NON_TORCH_PER_EXTRA_RANK_GIB = 0.2
# CALIBRATED: CUDA-graph pool per captured layer (dense), MoE layers capture more kernels.
GRAPH_GIB_PER_LAYER = 0.019
GRAPH_MOE_FACTOR = 1.8
# CUDA context + driver reservations taken before vLLM measures free memory.
CUDA_CONTEXT_GIB = 0.5
# vLLM's own redundancy margin in its --kv-cache-memory suggestion.
SAFETY_MARGIN_GIB = 0.15


def forward_elements_per_token(model: ModelSpec, tp: int) -> float:
    """Intermediates one token creates in one layer on one rank (gate_up, act, qkv, residual)."""
    h = model.hidden_size
    mats = 3 if model.mlp_gated else 2
    kvh = max(1, model.num_key_value_heads // tp)
    elems = mats * model.intermediate_size / tp + (model.num_attention_heads / tp + 2 * kvh) * model.head_dim + 4 * h
    if model.moe is not None:  # fused-MoE workspaces: every routed copy of the token
        m = model.moe
        elems += m.experts_per_token * (2 * m.moe_intermediate_size / tp + h) * 2
    return elems


def activation_peak_bytes(model: ModelSpec, profile: EngineProfile, *, batched_tokens: int, max_num_seqs: int, tp: int) -> float:
    """Profiled peak: one layer's activations for a full step + the sampler warm-up on full-vocab logits."""
    forward = batched_tokens * 2 * forward_elements_per_token(model, tp) * ACT_FORWARD_SHARE[profile.v1]
    seqs = min(max_num_seqs, batched_tokens)
    sampler = seqs * model.vocab_size * 4 * SAMPLER_LOGIT_COPIES[profile.v1]
    return forward + sampler


def non_torch_bytes(tp: int) -> float:
    return (NON_TORCH_BASE_GIB + NON_TORCH_PER_EXTRA_RANK_GIB * (tp - 1)) * GIB


def cuda_graph_bytes(model: ModelSpec, *, pp: int, enforce_eager: bool) -> float:
    if enforce_eager:
        return 0.0
    layers = cdiv(model.num_hidden_layers, pp)
    return GRAPH_GIB_PER_LAYER * layers * (GRAPH_MOE_FACTOR if model.moe else 1.0) * GIB
