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
          detail="--max-num-batched-tokens / --max-num-seqs" if req.max_num_batched_tokens or req.max_num_seqs else
          "vLLM's get_batch_defaults for this GPU class" + (
              "" if req.workload().has_volume and not req.concurrency else ", max_num_seqs sized to the concurrency asked")),
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
        E(name="decode speed, one user", value=f"{option.single.per_user_tokens_per_s:.0f} tokens/s", provenance="calibrated",
          detail="serving-speed model fitted on published vLLM benchmark runs (bench/throughput_accuracy.py): "
          + "; ".join(throughput.assumptions(option.gpu, req.input_tokens + req.output_tokens // 2, option.quant))),
        E(name=f"speed at {option.speed.batch} users", value=f"{option.speed.per_user_tokens_per_s:.1f} tokens/s each, "
          f"{option.speed.tokens_per_s:.0f} tokens/s in all, TTFT {option.speed.ttft_s:.2f} s", provenance="calibrated",
          detail=f"prompts of {req.input_tokens} and answers of {req.output_tokens} tokens (--input-tokens/--output-tokens); "
          "other users' prefills share the decode steps (chunked prefill)"),
    ]
    rows.extend(_economics(req, option))
    return rows


def _economics(req, option) -> list[Explanation]:
    """Replicas from the workload, and every cost assumption (given by flag/file, or assumed)."""
    E = Explanation
    rows = []
    sizing = getattr(option, "sizing", None)
    if sizing is not None:
        rows.append(E(name="replicas", value=str(sizing.replicas), provenance="derived", detail="; ".join(sizing.how)))
    a = getattr(req, "assumptions", None)
    if option.cost is None or a is None:
        return rows
    for name, info in type(a).model_fields.items():
        rows.append(E(name=name.replace("_", " "), value=f"{getattr(a, name):g}",
                      provenance="given" if name in a.model_fields_set else "assumed", detail=info.description or ""))
    c = option.cost
    if c.api:
        rows.append(E(name="API compared", value=c.api, provenance="given" if req.api else "derived",
                      detail=f"{c.api_reason}; price list as of {c.api_prices_as_of}"))
    if c.verdict:
        rows.append(E(name="verdict", value=c.verdict_kind or "", provenance="derived", detail=c.verdict))
    return rows
