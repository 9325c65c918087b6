"""`selfhost plan --explain`: where every number came from (read / derived / assumed / calibrated / given)."""

from __future__ import annotations

from toolkit.sizing.results import Explanation
from toolkit.sizing import engine, kv, throughput
from toolkit.sizing.params import param_breakdown


def explain(req, resolved, option) -> list[Explanation]:
    spec, est, q = resolved.spec, option.est, option.quant
    src = "config.json" if resolved.source in ("local", "gguf") else f"catalog entry {spec.id} (transcribed from config.json)"
    p = param_breakdown(spec)
    kinds = dict(kv.layers_on_rank(spec, option.pp))
    m = est.memory
    E = Explanation
    rows = [
        E(name="layers", value=str(spec.num_hidden_layers), provenance="read", detail=src),
        E(name="hidden / heads / kv heads / head_dim", value=f"{spec.hidden_size} / {spec.num_attention_heads} / "
          f"{spec.num_key_value_heads} / {spec.head_dim}", provenance="read", detail=src),
        E(name="attention layer kinds", value=", ".join(f"{n}×{k}" for k, n in kinds.items()), provenance="derived",
          detail="from sliding_window / attention_chunk_size / full_attention_interval / layer_types"),
        E(name="parameters", value=f"{p.total / 1e9:.2f} B", provenance="derived",
          detail=f"from the geometry (published: {spec.params_b} B)"),
        E(name="bytes per quantized weight", value=f"{q.bytes_per_weight:g}", provenance="read",
          detail=f"{q.name}: scales and zeros included; embeddings {'quantized' if q.quantizes_embeddings else 'kept in bf16'}"),
        E(name="weights per GPU", value=f"{m.weights_gib} GiB",
          provenance="read" if resolved.weight_bytes else "derived",
          detail="exact tensor bytes from file headers" if resolved.weight_bytes else
          f"parameters × bytes, ÷ TP {option.tp}, vocab padded to 64 per rank, ceil(L/PP {option.pp}) layers"),
        E(name="KV bytes per token per GPU", value=str(est.capacity.kv_bytes_per_token), provenance="derived",
          detail="MLA latent (kv_lora_rank + rope dim), replicated per rank" if spec.mla else
          f"2 × head_dim × max(1, kv_heads // TP) × {kv.kv_dtype_bytes(req.kv_cache_dtype):g} B × layers"),
        E(name="gpu_memory_utilization", value=f"{est.gpu_memory_utilization}",
          provenance="given" if req.gpu_memory_utilization else "assumed",
          detail=f"vLLM {req.vllm_version} default" if not req.gpu_memory_utilization else "--gpu-memory-utilization"),
        E(name="max_num_batched_tokens / max_num_seqs", value=f"{est.max_num_batched_tokens} / {est.max_num_seqs}",
          provenance="given" if req.max_num_batched_tokens else "assumed",
          detail="vLLM's get_batch_defaults for this GPU class, max_num_seqs sized to the concurrency asked"),
        E(name="activation peak", value=f"{m.activation_gib} GiB", provenance="calibrated",
          detail=f"{engine.ACT_FORWARD_SHARE[True]} × one layer's intermediates for the step + "
          f"{engine.SAMPLER_LOGIT_COPIES[True]} × fp32 logits of max_num_seqs × vocab (fitted on public start-up logs)"),
        E(name="non-torch memory", value=f"{m.non_torch_gib} GiB", provenance="calibrated",
          detail=f"{engine.NON_TORCH_BASE_GIB} GiB + {engine.NON_TORCH_PER_EXTRA_RANK_GIB} GiB per extra TP rank"),
        E(name="CUDA graphs", value=f"{m.cuda_graph_gib} GiB", provenance="calibrated",
          detail=f"{engine.GRAPH_GIB_PER_LAYER} GiB per layer (×{engine.GRAPH_MOE_FACTOR} MoE); 0 with --enforce-eager"),
        E(name="KV cache", value=f"{m.kv_cache_gib} GiB", provenance="derived",
          detail="requested − weights − activation − non-torch − CUDA graphs"),
        E(name="context", value=str(est.capacity.max_model_len), provenance="given" if req.context else "assumed",
          detail="--context" if req.context else "default 8192 (vLLM would otherwise reserve the model maximum)"),
        E(name="decode speed", value=f"{option.single.tokens_per_s:.0f} tokens/s", provenance="assumed",
          detail="; ".join(throughput.assumptions(option.gpu, max(1, est.capacity.max_model_len // 2)))),
    ]
    return rows
