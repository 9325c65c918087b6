"""KV-cache bytes per token and per request, per rank, by attention kind (sizing-notes §4.4, §5.2)."""

from __future__ import annotations

from collections import Counter

from toolkit.catalog.spec import ModelSpec


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def kv_dtype_bytes(kv_cache_dtype: str) -> float:
    return 1.0 if kv_cache_dtype.startswith("fp8") else 2.0


def kv_heads_per_rank(model: ModelSpec, tp: int) -> int:
    """KV heads each rank stores: replicated when TP exceeds the KV head count."""
    return max(1, model.num_key_value_heads // tp)


def bytes_per_token_layer(model: ModelSpec, tp: int, b_kv: float) -> float:
    """One token, one attention layer, one rank."""
    if model.mla is not None:  # the compressed latent is replicated on every TP rank
        return (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim) * b_kv
    return 2 * model.head_dim * kv_heads_per_rank(model, tp) * b_kv


def layers_on_rank(model: ModelSpec, pp: int) -> Counter:
    """Attention-layer kinds held by the busiest pipeline stage."""
    kinds = model.attention_layers()
    per_stage = cdiv(len(kinds), pp)
    return Counter(kinds[:per_stage]) if pp > 1 else Counter(kinds)


def tokens_held(kind: str, model: ModelSpec, context: int, batched_tokens: int, block: int) -> int:
    """Tokens of KV one request keeps for a layer of this kind (vLLM's max_memory_usage_bytes)."""
    if kind == "full":
        return cdiv(context, block) * block
    if kind == "sliding":
        w = model.sliding_window or context
        return (cdiv(min(w - 1 + batched_tokens, context), block) + 1) * block
    if kind == "chunked":
        w = model.attention_chunk_size or context
        return cdiv(min(w + batched_tokens, context), block) * block
    return 0


def request_bytes(model: ModelSpec, context: int, *, tp: int, pp: int, b_kv: float, batched_tokens: int, block: int) -> float:
    """KV bytes one request of `context` tokens needs on the busiest rank."""
    per_layer = bytes_per_token_layer(model, tp, b_kv)
    return sum(
        n * tokens_held(kind, model, context, batched_tokens, block) * per_layer
        for kind, n in layers_on_rank(model, pp).items()
    )


def bytes_per_token(model: ModelSpec, *, tp: int, pp: int, b_kv: float) -> float:
    """Marginal KV bytes per token on a rank, counting every layer (sliding windows not yet full)."""
    return sum(layers_on_rank(model, pp).values()) * bytes_per_token_layer(model, tp, b_kv)


def is_uniform(model: ModelSpec) -> bool:
    return set(model.attention_layers()) == {"full"}
