"""Geometry and exact weight bytes from files on disk: a Hugging Face directory or a GGUF file.

Only headers are read (safetensors: 8-byte length + JSON; GGUF: metadata + tensor infos), never tensor
data, so a 400 GB checkpoint resolves in milliseconds. Unknown architectures fail closed: a wrong KV
formula is worse than no answer.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from toolkit import catalog
from toolkit.catalog.resolve import ResolvedModel, find_by_name
from toolkit.errors import CatalogError
from toolkit.catalog.spec import MLASpec, ModelSpec, MoESpec, Openness, QuantSpec
from toolkit.catalog.files import CONFIG_JSON_LIMIT, load_json, safetensors_tensors

# config.json model_type values whose attention/MLP layout the sizing formulas cover.
SUPPORTED_MODEL_TYPES = (
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "qwen2_moe",
    "qwen3_moe",
    "qwen2_vl",
    "qwen2_5_vl",
    "deepseek_v2",
    "deepseek_v3",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "phi3",
)
_LAYER_KINDS = {
    "full_attention": "full",
    "sliding_attention": "sliding",
    "chunked_attention": "chunked",
    "linear_attention": "linear",
}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
_VISION_WORDS = ("vision", "visual", "multi_modal_projector", "mm_projector", "image_newline", "resampler")
_EMBED = re.compile(r"(^|\.)(embed_tokens|lm_head|wte|word_embeddings)\.")
_LAYER_NO = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_MAX_HEADER = 100 * 1024 * 1024  # safetensors caps headers at 100 MB


def _fail(where: Path | str, what: str, fix: str) -> CatalogError:
    return CatalogError(f"{where}: {what}", fix=fix)


# ---------------------------------------------------------------- Hugging Face directory


def from_directory(path: Path) -> ResolvedModel:
    """ModelSpec from config.json, exact bytes from safetensors headers, format from quantization_config."""
    path = path.resolve()
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise _fail(
            path,
            "no config.json in this directory",
            "point at a Hugging Face model directory (config.json + *.safetensors), "
            "e.g. `huggingface-cli download REPO --local-dir DIR`",
        )
    try:
        cfg = load_json(cfg_file, limit=CONFIG_JSON_LIMIT, what="config.json", error=CatalogError)  # bounded; one-line errors
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(cfg_file, f"not valid JSON ({exc})", "re-download config.json") from None
    if not isinstance(cfg, dict):
        raise _fail(cfg_file, "expected a JSON object", "re-download config.json")

    tensors = read_safetensors_dir(path)
    geo = _geometry(cfg, cfg_file, tensors)
    q = _quant_from_config(cfg, path)
    prequantized = q.name != "none"

    weight_bytes = embedding_bytes = None
    vision_params = 0
    params = 0
    if tensors:
        weight_bytes = embedding_bytes = 0
        for name, (dtype, numel, nbytes) in tensors.items():
            vision = any(w in name for w in _VISION_WORDS)
            layer = _LAYER_NO.search(name)
            if not vision and layer and int(layer.group(1)) >= geo["num_hidden_layers"]:
                continue  # MTP / next-token-prediction layers vLLM loads only for speculative decoding
            if not prequantized and dtype in _FLOAT_DTYPES:
                nbytes = numel * 2  # vLLM casts fp32 checkpoints to the 16-bit model dtype
            weight_bytes += nbytes
            if vision:
                vision_params += numel
            else:
                params += numel
                if _EMBED.search(name):
                    embedding_bytes += nbytes
    if tensors:
        _check_total(path, geo, weight_bytes, vision_params)
    if not tensors or prequantized:
        params = _estimate_params(geo)  # packed int4 tensors hide the real parameter count
    geo["vision_params_b"] = round(vision_params / 1e9, 6)
    geo["params_b"] = round(params / 1e9, 6)
    if prequantized:
        geo["native_quantization"] = q.name

    name_hint = str(cfg.get("_name_or_path") or path.name)
    spec, base = _finish(geo, str(path), name_hint, f"Local checkpoint at {path}.")
    return ResolvedModel(
        spec=spec,
        repo_id=str(path),
        base_id=base,
        quant=q,
        source="local",
        local_path=str(path),
        weight_bytes=weight_bytes,
        embedding_bytes=embedding_bytes,
        prequantized=prequantized,
    )


def from_config_file(file: Path) -> ResolvedModel:
    """A bare config.json (as copied from a model page, before any download): geometry, declared dtype and
    quantization_config are read; weight bytes are estimated from the geometry since no safetensors exist."""
    file = file.resolve()
    try:
        cfg = load_json(file, limit=CONFIG_JSON_LIMIT, what="config.json", error=CatalogError)  # bounded; one-line errors
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(file, f"not valid JSON ({exc})", "copy config.json again from the model page") from None
    if not isinstance(cfg, dict):
        raise _fail(file, "expected a JSON object", "copy config.json again from the model page")
    geo = _geometry(cfg, file, {})
    q = _quant_from_config(cfg, file.parent)
    prequantized = q.name != "none"
    geo["params_b"] = round(_estimate_params(geo) / 1e9, 6)
    if prequantized:
        geo["native_quantization"] = q.name
    name = str(cfg.get("_name_or_path") or "")
    repo = name if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not Path(name).exists() else None
    note = f"Planned from {file} alone (no weights downloaded): weight bytes are estimated from the geometry."
    spec, base = _finish(geo, repo or str(file), name or file.parent.name, note)
    return ResolvedModel(
        spec=spec,
        repo_id=repo or str(file),
        base_id=base,
        quant=q,
        source="local",
        weight_bytes=None,
        embedding_bytes=None,
        prequantized=prequantized,
    )


def read_safetensors_header(file: Path) -> dict[str, tuple[str, int, int]]:
    """Tensor name → (dtype, element count, bytes) from one file's header; no tensor data is read."""
    tensors = safetensors_tensors(file, limit=_MAX_HEADER, fix="the file is damaged or partly downloaded: download it again")
    return {name: (dtype, math.prod(shape), nbytes) for name, (dtype, shape, nbytes) in tensors.items()}


def read_safetensors_dir(path: Path) -> dict[str, tuple[str, int, int]]:
    """All tensors of the checkpoint vLLM would load from `path` (index shards, else *.safetensors)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _fail(index, f"unreadable index ({exc})", "download the checkpoint again") from None
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise _fail(
                path,
                f"incomplete download: {len(missing)} shard(s) missing, e.g. {missing[0]}",
                "finish the download (huggingface-cli download REPO --local-dir DIR)",
            )
        files = [path / s for s in shards]
    else:
        files = sorted(path.glob("*.safetensors"))
        hf = [f for f in files if not f.name.startswith("consolidated")]
        files = hf or files  # Mistral repos ship both layouts; vLLM loads the HF shards
    tensors: dict[str, tuple[str, int, int]] = {}
    for file in files:
        tensors.update(read_safetensors_header(file))
    return tensors


def _geometry(cfg: dict, cfg_file: Path, tensors: dict) -> dict[str, Any]:
    """ModelSpec geometry fields from config.json (text_config for VLMs)."""
    tc = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    model_type = str(tc.get("model_type") or cfg.get("model_type") or "")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise _fail(
            cfg_file,
            f"unsupported architecture (model_type '{model_type or '?'}')",
            "selfhost sizes these model types from config.json: "
            + ", ".join(SUPPORTED_MODEL_TYPES)
            + "; plan a catalog model instead (selfhost models)",
        )

    def need(key: str) -> Any:
        value = tc.get(key, cfg.get(key))
        if value is None:
            raise _fail(
                cfg_file,
                f"missing '{key}' (model_type {model_type})",
                "use the config.json the model was published with",
            )
        return value

    L, H, nq = int(need("num_hidden_layers")), int(need("hidden_size")), int(need("num_attention_heads"))
    archs = cfg.get("architectures") or [model_type]
    dtype = tc.get("torch_dtype") or cfg.get("torch_dtype") or cfg.get("dtype") or tc.get("dtype")
    geo: dict[str, Any] = {
        "architecture": str(archs[0]),
        "family": model_type,
        "num_hidden_layers": L,
        "hidden_size": H,
        "num_attention_heads": nq,
        "num_key_value_heads": int(tc.get("num_key_value_heads") or nq),
        "head_dim": int(tc.get("head_dim") or H // nq),
        "intermediate_size": int(need("intermediate_size")),
        "vocab_size": int(need("vocab_size")),
        "tie_word_embeddings": _tied(cfg, tc, model_type, tensors),
        "max_position_embeddings": int(need("max_position_embeddings")),
        "torch_dtype": dtype if dtype in ("bfloat16", "float16", "float32") else "bfloat16",
    }
    if model_type == "mixtral":
        geo["moe"] = MoESpec(
            num_experts=int(need("num_local_experts")),
            experts_per_token=int(need("num_experts_per_tok")),
            moe_intermediate_size=geo["intermediate_size"],
        )
    elif model_type in ("qwen2_moe", "qwen3_moe"):
        shared = int(tc.get("shared_expert_intermediate_size") or 0)
        geo["moe"] = MoESpec(
            num_experts=int(need("num_experts")),
            experts_per_token=int(need("num_experts_per_tok")),
            moe_intermediate_size=int(need("moe_intermediate_size")),
            num_shared_experts=1 if shared else 0,
            shared_expert_intermediate_size=shared or None,
            layer_interval=int(tc.get("decoder_sparse_step") or 1),
        )
    elif model_type in ("deepseek_v2", "deepseek_v3"):
        nope, rope = int(need("qk_nope_head_dim")), int(need("qk_rope_head_dim"))
        geo["mla"] = MLASpec(
            kv_lora_rank=int(need("kv_lora_rank")),
            qk_rope_head_dim=rope,
            qk_nope_head_dim=nope,
            v_head_dim=int(need("v_head_dim")),
            q_lora_rank=tc.get("q_lora_rank"),
        )
        geo["head_dim"] = nope + rope
        if tc.get("n_routed_experts"):
            geo["moe"] = MoESpec(
                num_experts=int(tc["n_routed_experts"]),
                experts_per_token=int(need("num_experts_per_tok")),
                moe_intermediate_size=int(need("moe_intermediate_size")),
                num_shared_experts=int(tc.get("n_shared_experts") or 0),
                first_dense_layers=int(tc.get("first_k_dense_replace") or 0),
                layer_interval=int(tc.get("moe_layer_freq") or 1),
            )
    geo.update(_attention_pattern(tc, model_type, L, cfg_file))
    return geo


def _tied(cfg: dict, tc: dict, model_type: str, tensors: dict) -> bool:
    for source in (tc, cfg):
        if isinstance(source.get("tie_word_embeddings"), bool):
            return source["tie_word_embeddings"]
    if tensors:  # no lm_head tensor beside an embedding = shared
        return not any("lm_head." in n for n in tensors)
    return model_type.startswith("gemma")  # transformers' per-model default


def _attention_pattern(tc: dict, model_type: str, L: int, cfg_file: Path) -> dict[str, Any]:
    """Sliding-window layout: explicit layer_types first, then each family's rule."""
    window = tc.get("sliding_window")
    types = tc.get("layer_types")
    if isinstance(types, list) and types:
        unknown = sorted({t for t in types if t not in _LAYER_KINDS})
        if unknown:
            raise _fail(
                cfg_file, f"unsupported layer types {unknown}", "plan a catalog model instead (selfhost models)"
            )
        kinds = [_LAYER_KINDS[t] for t in types]
        return {"layer_types": kinds, "sliding_window": window if "sliding" in kinds else None}
    if model_type == "gemma2":
        return {"sliding_window": window or 4096, "full_attention_interval": 2}
    if model_type in ("gemma3", "gemma3_text"):
        return {"sliding_window": window or 1024, "full_attention_interval": int(tc.get("sliding_window_pattern") or 6)}
    if model_type.startswith("qwen"):
        if not tc.get("use_sliding_window") or not window:
            return {}
        first = int(tc.get("max_window_layers") or L)  # transformers: layers from max_window_layers on slide
        kinds = ["sliding" if i >= first else "full" for i in range(L)]
        return {"layer_types": kinds, "sliding_window": window} if "sliding" in kinds else {}
    if model_type in ("mistral", "mixtral", "phi3") and window:
        return {"sliding_window": int(window)}  # every layer slides (Mistral v0.1)
    return {}


def _quant_from_config(cfg: dict, path: Path) -> QuantSpec:
    """The catalog format a checkpoint's quantization_config (or ModelOpt's hf_quant_config.json) declares."""
    qc = cfg.get("quantization_config")
    modelopt = path / "hf_quant_config.json"
    if not isinstance(qc, dict) and modelopt.is_file():
        try:
            qc = {"quant_method": "modelopt", **json.loads(modelopt.read_text()).get("quantization", {})}
        except (OSError, ValueError, AttributeError):
            qc = None
    if not isinstance(qc, dict):
        return catalog.quant("none")
    method = str(qc.get("quant_method", "")).lower()
    bits = int(qc.get("bits") or qc.get("w_bit") or 4)
    group = qc.get("group_size", qc.get("q_group_size", 128))
    if method == "awq":
        return _sized(catalog.quant("awq"), bits, group)
    if method == "gptq":
        return _sized(catalog.quant("gptq-int8" if bits == 8 else "gptq"), bits, group)
    if method in ("fp8", "fbgemm_fp8"):
        return catalog.quant("fp8")
    if method == "mxfp4":
        return catalog.quant("mxfp4")
    if method == "bitsandbytes":
        if qc.get("load_in_8bit"):
            return catalog.quant("bitsandbytes").model_copy(
                update={"bytes_per_weight": 1.0, "weight_bits": 8, "group_size": None}
            )
        return catalog.quant("bitsandbytes")
    if method == "modelopt":
        algo = str(qc.get("quant_algo", "")).upper()
        if algo.startswith("FP8"):
            return catalog.quant("fp8")
        if "FP4" in algo:
            return catalog.quant("nvfp4")
    if method == "compressed-tensors":
        return _compressed_tensors(qc, path)
    raise _fail(
        path / "config.json",
        f"unsupported quantization_config (quant_method '{method}')",
        "use an awq, gptq, fp8, compressed-tensors, bitsandbytes, mxfp4 or modelopt checkpoint",
    )


def _compressed_tensors(qc: dict, path: Path) -> QuantSpec:
    groups = [g for g in (qc.get("config_groups") or {}).values() if isinstance(g, dict) and g.get("weights")]
    if not groups:
        raise _fail(
            path / "config.json",
            "compressed-tensors config without weight quantization",
            "check quantization_config.config_groups",
        )
    w, act = groups[0]["weights"], groups[0].get("input_activations")
    bits, wtype, group = int(w.get("num_bits", 4)), w.get("type", "int"), w.get("group_size")
    if wtype == "float":
        return catalog.quant("fp8" if bits == 8 else "nvfp4")
    if bits == 8 and act and int(act.get("num_bits", 16)) == 8:
        return catalog.quant("int8")
    return _sized(catalog.quant("compressed-tensors"), bits, group)


def _sized(base: QuantSpec, bits: int, group: Any) -> QuantSpec:
    """`base` re-sized for another bit width / group (packed ints + fp16 scale + packed zero per group)."""
    group = int(group) if group and int(group) > 0 else None
    if bits == base.weight_bits and group == base.group_size:
        return base
    per_group = (2 + bits / 8) / group if group else 0.0
    return base.model_copy(
        update={"weight_bits": bits, "group_size": group, "bytes_per_weight": round(bits / 8 + per_group, 4)}
    )


def _check_total(path: Path, geo: dict, weight_bytes: int, vision_params: int) -> None:
    """The safetensors headers must hold roughly what config.json's geometry needs (a generous factor either way:
    4-bit packing is ~0.25× of bf16). A self-consistent but tiny header is an incomplete or mismatched checkpoint."""
    expected = _estimate_params(geo) * 2  # bf16 bytes of the text model
    if expected <= 0:
        return
    if weight_bytes < expected * 0.1 or weight_bytes > expected * 4 + vision_params * 4:
        raise _fail(
            path,
            f"safetensors hold {weight_bytes / 2**30:.2f} GiB of weights but config.json's geometry needs about "
            f"{expected / 2**30:.2f} GiB (bf16): incomplete download or a config.json from another model",
            "download the complete checkpoint (every *.safetensors shard) with its own config.json",
        )


def unusable(path: Path, exc: Exception) -> CatalogError:
    """One line for a config.json value that cannot be a model geometry ("eighty" layers, zero heads)."""
    from toolkit.catalog.files import excerpt

    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic: name the first field it refused
        first = errors()[0]
        what = f"{'.'.join(map(str, first['loc']))}: {first['msg']} (got {excerpt(first.get('input'))})"
    else:
        text = " ".join((str(exc) or type(exc).__name__).split())
        what = text if len(text) <= 80 else text[:79] + "…"
    return _fail(path, f"config.json has a value that is not a usable model geometry ({what})",
                 "use the config.json the model was published with")


def _estimate_params(geo: dict) -> int:
    """Parameter count from the geometry (used when packed tensors hide it)."""
    L, H, nq, kvh, hd = (
        geo[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim")
    )
    mla: MLASpec | None = geo.get("mla")
    if mla:
        qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        q = (H * mla.q_lora_rank + mla.q_lora_rank * nq * qk) if mla.q_lora_rank else H * nq * qk
        kv = H * (mla.kv_lora_rank + mla.qk_rope_head_dim) + mla.kv_lora_rank * nq * (
            mla.qk_nope_head_dim + mla.v_head_dim
        )
        attn = q + kv + nq * mla.v_head_dim * H
    else:
        attn = 2 * H * nq * hd + 2 * H * kvh * hd
    dense = 3 * H * geo["intermediate_size"]
    moe: MoESpec | None = geo.get("moe")
    total = 0
    for i in range(L):
        is_moe = moe is not None and i >= moe.first_dense_layers and (i + 1) % moe.layer_interval == 0
        if is_moe:
            shared = moe.num_shared_experts * 3 * H * (moe.shared_expert_intermediate_size or moe.moe_intermediate_size)
            total += attn + moe.num_experts * (3 * H * moe.moe_intermediate_size + H) + shared
        else:
            total += attn + dense
    return total + geo["vocab_size"] * H * (1 if geo["tie_word_embeddings"] else 2)


# ---------------------------------------------------------------- catalog match (licence, family)

_GEOMETRY_KEYS = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
)


def _finish(geo: dict, ident: str, name_hint: str, note: str) -> tuple[ModelSpec, str]:
    """Build the ModelSpec; borrow licence/family from a catalog entry with the same geometry."""

    def key(d, with_context: bool) -> tuple:
        get = d.get if isinstance(d, dict) else lambda k: getattr(d, k)
        moe = get("moe")
        ctx = (get("max_position_embeddings"),) if with_context else ()
        return tuple(get(k) for k in _GEOMETRY_KEYS) + ((moe.num_experts if moe else 0),) + ctx

    named = find_by_name(name_hint)
    if named is not None and key(named, False) == key(geo, False):
        matches = [named]
    else:
        # Same geometry and context first (tells Llama 3 8B from 3.1 8B); else geometry alone when every
        # such entry carries the same licence (a fine-tune that changed the context length).
        matches = [m for m in catalog.models() if key(m, True) == key(geo, True)]
        if not matches:
            loose = [m for m in catalog.models() if key(m, False) == key(geo, False)]
            matches = loose if len({m.license for m in loose}) == 1 else []
    if matches:
        base = matches[0]
        fields = {
            **geo,
            "family": base.family,
            "license": base.license,
            "openness": base.openness,
            "notes": f"{note} Geometry matches catalog entry {base.id}; its licence applies.",
        }
        if not geo.get("params_b"):
            fields["params_b"] = base.params_b
        base_id = base.id
    else:
        fields = {
            **geo,
            "license": catalog.UNKNOWN_LICENSE.id,
            "openness": Openness(weights=True, inference_code=False, training_code=False, training_data=False),
            "notes": f"{note} Not in the catalog: licence unknown — check the model card.",
        }
        base_id = ident
    fields.setdefault("params_b", 0.0)
    return ModelSpec(id=ident, **fields), base_id


# ---------------------------------------------------------------- GGUF

_GGUF_ARCH = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen2moe": "Qwen2MoeForCausalLM",
    "qwen3moe": "Qwen3MoeForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "deepseek2": "DeepseekV2ForCausalLM",
    "phi3": "Phi3ForCausalLM",
}


def from_gguf(path: Path) -> ResolvedModel:
    """Geometry from GGUF metadata, exact bytes from tensor infos, format from general.file_type."""
    path = path.resolve()
    if path.suffix.lower() != ".gguf":
        raise _fail(
            path,
            "neither a model directory nor a .gguf file",
            "give a directory with config.json + *.safetensors, a .gguf file, or a repo id",
        )
    try:
        import gguf

        reader = gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # the gguf package raises assorted errors on damaged files
        raise _fail(
            path, f"cannot read the GGUF header ({exc})", "the file is damaged or partly downloaded: download it again"
        ) from None

    def get(key: str, default: Any = None) -> Any:
        field = reader.fields.get(key)
        if field is None:
            return default
        value = field.contents()
        if isinstance(value, list):  # per-layer arrays (head counts, FFN sizes): the largest rules
            value = max(value) if value else default
        return value

    if int(get("split.count", 1) or 1) > 1:
        raise _fail(
            path,
            "split GGUF file (part of a multi-file model)",
            "vLLM loads single-file GGUF only: merge with `llama-gguf-split --merge FIRST.gguf OUT.gguf`",
        )
    arch = str(get("general.architecture", ""))
    if arch not in _GGUF_ARCH:
        raise _fail(
            path,
            f"unsupported GGUF architecture '{arch or '?'}'",
            "selfhost sizes these GGUF architectures: " + ", ".join(_GGUF_ARCH),
        )

    def need(key: str) -> int:
        value = get(f"{arch}.{key}")
        if value is None:
            raise _fail(path, f"missing metadata '{arch}.{key}'", "re-convert the model with a current llama.cpp")
        return int(value)

    tensors = {t.name: t for t in reader.tensors}
    L, H, nq = need("block_count"), need("embedding_length"), need("attention.head_count")
    embd = tensors.get("token_embd.weight")
    if embd is not None and len(embd.shape) == 2:
        vocab = int(embd.shape[-1])  # GGUF lists dims innermost first: [hidden, vocab]
    elif "tokenizer.ggml.tokens" in reader.fields:
        vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    else:
        vocab = need("vocab_size")
    experts = int(get(f"{arch}.expert_count", 0) or 0)
    ffn = int(get(f"{arch}.feed_forward_length", 0) or 0)
    geo: dict[str, Any] = {
        "architecture": "MixtralForCausalLM" if arch == "llama" and experts else _GGUF_ARCH[arch],
        "family": arch,
        "num_hidden_layers": L,
        "hidden_size": H,
        "num_attention_heads": nq,
        "num_key_value_heads": int(get(f"{arch}.attention.head_count_kv") or nq),
        "head_dim": int(get(f"{arch}.attention.key_length") or H // nq),
        "intermediate_size": ffn or int(get(f"{arch}.expert_feed_forward_length", 0) or 0) or 1,
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in tensors,
        "max_position_embeddings": need("context_length"),
        "torch_dtype": "float16" if get("general.file_type") == 1 else "bfloat16",
    }
    if experts:
        shared_ffn = int(get(f"{arch}.expert_shared_feed_forward_length", 0) or 0)
        geo["moe"] = MoESpec(
            num_experts=experts,
            experts_per_token=int(get(f"{arch}.expert_used_count") or 1),
            moe_intermediate_size=int(get(f"{arch}.expert_feed_forward_length") or ffn),
            num_shared_experts=int(get(f"{arch}.expert_shared_count") or (1 if shared_ffn else 0)),
            shared_expert_intermediate_size=shared_ffn or None,
            first_dense_layers=int(get(f"{arch}.leading_dense_block_count") or 0),
        )
    if arch == "deepseek2":
        rope = need("rope.dimension_count")
        hd = int(get(f"{arch}.attention.key_length_mla") or get(f"{arch}.attention.key_length"))
        v = int(get(f"{arch}.attention.value_length_mla") or get(f"{arch}.attention.value_length"))
        geo["mla"] = MLASpec(
            kv_lora_rank=need("attention.kv_lora_rank"),
            qk_rope_head_dim=rope,
            qk_nope_head_dim=hd - rope,
            v_head_dim=v,
            q_lora_rank=int(get(f"{arch}.attention.q_lora_rank") or 0) or None,
        )
        geo.update(head_dim=hd, num_key_value_heads=nq)  # catalog convention: MLA kv heads = query heads
    window = get(f"{arch}.attention.sliding_window")
    if arch == "gemma2" and window:
        geo.update(sliding_window=int(window), full_attention_interval=2)
    elif arch == "gemma3" and window:
        geo.update(
            sliding_window=int(window),
            full_attention_interval=int(get(f"{arch}.attention.sliding_window_pattern") or 6),
        )

    weight_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    embedding_bytes = sum(int(tensors[n].n_bytes) for n in ("token_embd.weight", "output.weight") if n in tensors)
    geo["params_b"] = round(sum(int(t.n_elements) for t in reader.tensors) / 1e9, 6)
    q = _gguf_quant(reader, get("general.file_type"))
    geo["native_quantization"] = q.name
    spec, base = _finish(geo, str(path), str(get("general.name", path.stem)), f"GGUF file {path.name}.")
    return ResolvedModel(
        spec=spec,
        repo_id=str(path),
        base_id=base,
        quant=q,
        source="gguf",
        local_path=str(path),
        weight_bytes=weight_bytes,
        embedding_bytes=embedding_bytes,
        prequantized=True,
    )


def _gguf_quant(reader: Any, file_type: Any) -> QuantSpec:
    """general.file_type → GGUF type name (Q4_K_M is not stored per tensor); else the dominant tensor type."""
    import gguf

    linear = [t for t in reader.tensors if len(t.shape) >= 2 and t.name not in ("token_embd.weight", "output.weight")]
    n_el = sum(int(t.n_elements) for t in linear)
    measured = sum(int(t.n_bytes) for t in linear) / n_el if n_el else 2.0
    name = None
    if file_type is not None:
        try:
            name = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            name = None
    if name in (None, "GUESSED") and linear:
        by_type: dict[str, int] = {}
        for t in linear:
            by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + int(t.n_bytes)
        name = max(by_type, key=by_type.get)
    name = name or "F16"
    known = catalog.quantizations().get(name)
    if known is not None and known.kind == "gguf":
        return known
    return QuantSpec(
        name=name,
        kind="gguf",
        bytes_per_weight=round(measured, 4),
        weight_bits=round(measured * 8, 2),
        quantizes_embeddings=True,
        min_compute_capability=6.0,
        quality=f"GGUF {name} (measured {measured * 8:.2f} bits/weight); GGUF in vLLM is experimental — "
        "prefer llama.cpp or an AWQ/FP8 checkpoint.",
    )
