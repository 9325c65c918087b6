"""Parameter counts from a model's geometry, split by how they are stored and sharded.

The split matters because quantization touches only some tensors (linear layers; for MXFP4 only
experts) and tensor parallelism shards some and replicates others.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.catalog.spec import ModelSpec


@dataclass(frozen=True)
class ParamBreakdown:
    embedding: int
    """Input embedding rows × hidden."""
    lm_head: int
    """Output projection (0 when tied to the embedding)."""
    attention: int
    """All attention projections, all layers."""
    dense_mlp: int
    """Dense MLP weights (dense layers of MoE models included)."""
    experts: int
    """Routed expert weights, all layers."""
    shared: int
    """Shared-expert weights and routers (always active in MoE layers)."""
    norms: int
    """Norm weights (replicated on every rank)."""
    vision: int
    """Vision tower + projector (kept in bf16)."""

    @property
    def linear(self) -> int:
        """Weights a linear-layer quantization applies to."""
        return self.attention + self.dense_mlp + self.experts + self.shared

    @property
    def total(self) -> int:
        return self.embedding + self.lm_head + self.linear + self.norms + self.vision

    def active(self, model: ModelSpec) -> int:
        """Parameters one token reads (MoE: only the routed experts it uses)."""
        if model.moe is None:
            return self.total - self.vision
        share = model.moe.experts_per_token / model.moe.num_experts
        return self.total - self.vision - self.experts + round(self.experts * share)


def moe_layer_count(model: ModelSpec) -> int:
    if model.moe is None:
        return 0
    m = model.moe
    return sum(
        1
        for i in range(model.num_hidden_layers)
        if i >= m.first_dense_layers and (i - m.first_dense_layers + 1) % m.layer_interval == 0
    )


def attention_params_per_layer(model: ModelSpec) -> int:
    h, nq = model.hidden_size, model.num_attention_heads
    if model.mla is not None:
        a = model.mla
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        q = h * a.q_lora_rank + a.q_lora_rank * nq * qk if a.q_lora_rank else h * nq * qk
        kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank * nq * (a.qk_nope_head_dim + a.v_head_dim)
        return q + kv + nq * a.v_head_dim * h
    hd, kvh = model.head_dim, model.num_key_value_heads
    return h * nq * hd + 2 * h * kvh * hd + nq * hd * h


def param_breakdown(model: ModelSpec) -> ParamBreakdown:
    h, L = model.hidden_size, model.num_hidden_layers
    mats = 3 if model.mlp_gated else 2
    n_moe = moe_layer_count(model)
    experts = shared = 0
    if model.moe is not None:
        m = model.moe
        emats = 3 if m.gated else 2
        experts = n_moe * m.num_experts * emats * h * m.moe_intermediate_size
        shared_i = m.shared_expert_intermediate_size or m.moe_intermediate_size
        shared = n_moe * (m.num_shared_experts * emats * h * shared_i + h * m.num_experts)
    embedding = model.vocab_size * h
    return ParamBreakdown(
        embedding=embedding,
        lm_head=0 if model.tie_word_embeddings else embedding,
        attention=L * attention_params_per_layer(model),
        dense_mlp=(L - n_moe) * mats * h * model.intermediate_size,
        experts=experts,
        shared=shared,
        norms=L * 2 * h + h,
        vision=round(model.vision_params_b * 1e9),
    )
