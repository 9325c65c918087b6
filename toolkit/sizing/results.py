"""What the sizing engine returns: the per-GPU memory budget, the KV capacity and the explanation rows."""

from __future__ import annotations

from typing import Literal

from pydantic import model_serializer

from toolkit.catalog.spec import Strict

Provenance = Literal["read", "derived", "assumed", "calibrated", "given"]


class MemoryBreakdown(Strict):
    """Per GPU (rank), GiB, as vLLM budgets it at start-up."""

    total_gib: float
    """Device memory as vLLM sees it."""
    requested_gib: float
    """total × gpu_memory_utilization: what vLLM may use."""
    weights_gib: float
    """Model weights on this rank ("Model loading took …")."""
    activation_gib: float
    """Profiled activation peak for one max_num_batched_tokens step."""
    non_torch_gib: float
    """CUDA/NCCL/cuBLAS allocations outside PyTorch's allocator."""
    cuda_graph_gib: float
    """CUDA-graph memory (outside the KV budget, inside the headroom)."""
    lora_gib: float = 0.0
    """LoRA buffers vLLM pre-allocates (max_loras × max_lora_rank × Σ(in + out) per layer): out of the KV cache on GPU, host RAM on CPU."""

    @model_serializer(mode="wrap")
    def _omit_without_lora(self, handler):
        """Plans without LoRA serialise (and digest) exactly as before the field existed."""
        data = handler(self)
        if not self.lora_gib and isinstance(data, dict):
            data.pop("lora_gib", None)
        return data
    kv_cache_gib: float
    """What is left for the KV cache ("Available KV cache memory")."""
    headroom_gib: float
    """total − requested − CUDA graphs − context: must stay ≥ 0."""


class Capacity(Strict):
    kv_cache_tokens: int
    """Tokens the KV pool holds ("GPU KV cache size")."""
    max_model_len: int
    """Context length configured."""
    max_model_len_possible: int
    """Longest context one request could have with this pool (vLLM's "estimated maximum model length")."""
    max_concurrency: float
    """Full-length requests that fit at once ("Maximum concurrency for N tokens per request")."""
    kv_bytes_per_token: int
    """KV bytes one token costs on one rank (full-attention layers)."""


class Explanation(Strict):
    name: str
    """Quantity."""
    value: str
    """Value with unit."""
    provenance: Provenance
    """read from config / derived / assumed default / calibrated / given by user."""
    detail: str
    """Where it came from."""
