"""Weight bytes, total and per rank, for a quantization and a parallel layout (sizing-notes §5.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from toolkit.sizing.params import ParamBreakdown, param_breakdown
from toolkit.catalog.spec import ModelSpec, QuantSpec

MODEL_DTYPE_BYTES = 2  # vLLM runs bf16/fp16; fp32 checkpoints are cast down with dtype=auto
VOCAB_PAD = 64  # VocabParallelEmbedding pads each rank's rows to a multiple of 64


@dataclass(frozen=True)
class WeightBytes:
    embedding: float
    """Embedding + lm_head bytes (whole model)."""
    layers: float
    """Everything per-layer: attention, MLP, experts, norms (whole model)."""
    experts: float
    """Routed-expert share of `layers` (MoE)."""
    vision: float
    """Vision tower bytes (replicated on every rank)."""

    @property
    def total(self) -> float:
        return self.embedding + self.layers + self.vision


def weight_bytes(model: ModelSpec, quant: QuantSpec) -> WeightBytes:
    p: ParamBreakdown = param_breakdown(model)
    q = quant.bytes_per_weight if quant.kind != "none" else MODEL_DTYPE_BYTES
    emb_b = q if quant.quantizes_embeddings else MODEL_DTYPE_BYTES
    expert_b = q
    # An experts-only format (MXFP4 as gpt-oss ships it) leaves attention in bf16; a dense checkpoint in
    # that format (AMD Quark's MXFP4 Llama) has no experts, so it quantises every linear layer instead.
    other_b = MODEL_DTYPE_BYTES if quant.experts_only and model.moe is not None else q
    experts = p.experts * expert_b
    if quant.pad_hidden_to and model.moe is not None:
        h = model.hidden_size
        experts *= math.ceil(h / quant.pad_hidden_to) * quant.pad_hidden_to / h
    layers = experts + (p.attention + p.dense_mlp + p.shared) * other_b + p.norms * MODEL_DTYPE_BYTES
    return WeightBytes(
        embedding=(p.embedding + p.lm_head) * emb_b,
        layers=layers,
        experts=experts,
        vision=p.vision * MODEL_DTYPE_BYTES,
    )


def per_rank_bytes(model: ModelSpec, wb: WeightBytes, tp: int, pp: int, exact_total: int | None = None) -> float:
    """Weight bytes on the busiest rank.

    TP shards layers and (padded) vocab; PP gives each stage ceil(L/PP) layers, and the first/last
    stage also hold embedding/lm_head. When the checkpoint's exact size is known, the estimate's
    shape is kept and scaled to it.
    """
    vocab_rows = model.vocab_size
    padded = math.ceil(vocab_rows / (VOCAB_PAD * tp)) * VOCAB_PAD * tp
    emb = wb.embedding * padded / vocab_rows / tp
    tied_or_split = emb if (pp == 1 or model.tie_word_embeddings) else emb / 2
    layer_share = math.ceil(model.num_hidden_layers / pp) / model.num_hidden_layers
    rank = wb.layers * layer_share / tp + tied_or_split + wb.vision
    if exact_total:
        rank *= exact_total / wb.total
    return rank
