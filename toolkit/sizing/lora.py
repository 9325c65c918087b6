"""LoRA memory as vLLM 0.32.0 allocates it at start-up (`--enable-lora`), per GPU rank.

vLLM wraps every LoRA-capable layer when the model loads (vllm/lora/model_manager.py
`_create_lora_modules` → vllm/lora/utils.py `from_layer` → each wrapper's `create_lora_weights`) and
zero-fills two stacked buffers per slice, `max_loras` adapter slots deep, at `--max-lora-rank`:

    lora_a_stacked[slice] : [max_loras, 1, max_lora_rank, input_size]
    lora_b_stacked[slice] : [max_loras, 1, output_slice, max_lora_rank]

in `lora_dtype` (auto = the model dtype). They are allocated inside "Model loading took …", so they come
out of the KV cache. Per layer, with tensor parallel size T (vllm/lora/layers/):

- qkv_proj, packed q/k/v (MergedQKVParallelLinearWithLoRA, 3 slices): A is the full hidden size per
  slice (column-parallel input is not split), B is q/T, kv_rank, kv_rank (kv heads per rank
  = max(1, kv_heads/T), vLLM replicates KV heads when T > kv_heads).
- o_proj, down_proj (RowParallelLinearWithLoRA): A's input is split (q/T, intermediate/T), B is the full
  hidden size.
- gate_up_proj, packed gate/up (MergedColumnParallelLinearWithLoRA, 2 slices): A hidden ×2, B intermediate/T ×2.
- Phi-3 ships qkv and gate_up fused: one slice each (QKVParallelLinearWithLoRA / ColumnParallelLinearWithLoRA).
- embed_tokens (VocabParallelEmbeddingWithLoRA: A [max_loras, vocab, r], B [max_loras, 1, hidden, r]) and
  lm_head (LogitsProcessorWithLoRA: A [max_loras, 1, r, hidden], B [max_loras, 1, vocab, r]) only for
  architectures whose vLLM class lists them in `embedding_modules` (Llama, Qwen3, Phi-3); never split by TP.

The punica index tensors (4 × max_num_batched_tokens + 3 × max_num_seqs int64) and the float32 shrink
buffer of the profile run ([slices, max_num_batched_tokens, min(8, rank)]) are counted too; the dummy
warm-up adapters and every loaded adapter live in host RAM (`--max-cpu-loras` of them, vLLM loads with
device="cpu"), not on the GPU. `fully_sharded_loras` is not planned (vLLM's default is off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from toolkit.catalog.adapters import ALLOWED_RANKS, DEFAULT_MAX_LORA_RANK, DEFAULT_MAX_LORAS, lora_layout
from toolkit.catalog.spec import ModelSpec
from toolkit.errors import PlanError

MAX_LORA_VOCAB = 258048
"""LogitsProcessorWithLoRA refuses larger vocabularies."""


@dataclass(frozen=True)
class LoraSettings:
    max_loras: int = DEFAULT_MAX_LORAS
    """`--max-loras`: adapter slots in one batch (each slot is a full set of buffers)."""
    max_lora_rank: int = DEFAULT_MAX_LORA_RANK
    """`--max-lora-rank`: buffers are sized at this rank whatever the adapters' own rank."""
    max_cpu_loras: int | None = None
    """`--max-cpu-loras`: adapters cached in host RAM (None = max_loras, vLLM's default)."""
    adapter_bytes: int = 0
    """Largest adapter's tensors in the LoRA dtype (host-RAM cache per adapter)."""
    dtype_bytes: int = 2
    """lora_dtype bytes (auto = model dtype: 2 for bf16/fp16, 4 for float32)."""


@dataclass
class LoraMemory:
    gpu_bytes: int
    """Per rank: stacked A/B buffers + punica metadata + profile shrink buffer."""
    buffers_bytes: int
    """Per rank: the stacked A/B buffers alone (what "Model loading took" grows by)."""
    host_bytes: int
    """Host RAM for the CPU-side adapter cache (max_cpu_loras × largest adapter)."""
    rows: list[tuple[str, int]] = field(default_factory=list)
    """(module, bytes on one rank, all layers of the stage)."""


def lora_memory(model: ModelSpec, s: LoraSettings, *, tp: int = 1, pp: int = 1,
                max_num_batched_tokens: int = 8192, max_num_seqs: int = 256) -> LoraMemory:
    """Bytes vLLM allocates for LoRA on the busiest rank (vllm/lora/layers/*.py create_lora_weights)."""
    qkv_slices, gu_slices, embed = lora_layout(model)
    if s.max_lora_rank not in ALLOWED_RANKS:
        raise PlanError(f"--max-lora-rank {s.max_lora_rank} is not a value vLLM accepts",
                        fix=f"use one of {', '.join(map(str, ALLOWED_RANKS))}")
    if s.max_loras < 1:
        raise PlanError(f"--max-loras must be at least 1 (got {s.max_loras})")
    n, r, b = s.max_loras, s.max_lora_rank, s.dtype_bytes
    H, V, I = model.hidden_size, model.vocab_size, model.intermediate_size
    q = model.num_attention_heads * model.head_dim
    kv_rank = max(1, model.num_key_value_heads // tp) * model.head_dim  # replicated when tp > kv heads
    layers = math.ceil(model.num_hidden_layers / pp)

    def ab(a_in: int, b_out: int, slices: int = 1) -> int:
        # `slices` A buffers of [n, 1, r, a_in] and B buffers summing to b_out rows of [.., r]
        return n * r * (slices * a_in + b_out) * b

    per_layer = [
        ("qkv_proj", ab(H, q // tp + 2 * kv_rank, qkv_slices)),
        ("o_proj", ab(q // tp, H)),
        ("gate_up_proj" if model.mlp_gated else "up_proj", ab(H, (2 if model.mlp_gated else 1) * I // tp,
                                                               gu_slices if model.mlp_gated else 1)),
        ("down_proj", ab(I // tp, H)),
    ]
    rows = [(name, per * layers) for name, per in per_layer]
    if embed:
        if V > MAX_LORA_VOCAB:
            raise PlanError(f"vLLM refuses LoRA for vocabularies over {MAX_LORA_VOCAB} ({model.id}: {V})")
        # pp > 1: embed_tokens sits on the first stage, lm_head on the last; one of them on the busiest rank
        rows.append(("embed_tokens + lm_head" if pp == 1 else "embed_tokens or lm_head",
                     n * r * (V + H) * b * (2 if pp == 1 else 1)))
    buffers = sum(x for _, x in rows)
    T = math.ceil(max_num_batched_tokens / 8) * 8
    meta = (4 * T + 3 * max_num_seqs) * 8  # punica_base.py index tensors (int64)
    shrink = max(qkv_slices, gu_slices) * T * min(8, r) * 4  # profile run, float32, transient
    cpu_loras = s.max_cpu_loras or s.max_loras
    return LoraMemory(gpu_bytes=buffers + meta + shrink, buffers_bytes=buffers,
                      host_bytes=cpu_loras * s.adapter_bytes, rows=rows)
