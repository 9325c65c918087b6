"""LoRA adapters on disk: checked against the planned model before anything ships.

A PEFT adapter directory holds `adapter_config.json` and `adapter_model.safetensors`. Only the config
(≤ 1 MiB) and the safetensors header (≤ 16 MiB) are read, never tensor data. Each refusal is one line that
names the file, the key and the fix, and mirrors what vLLM 0.32.0 would refuse at load time
(vllm/lora/peft_helper.py `validate_legal`, vllm/lora/lora_model.py `from_local_checkpoint`) or get wrong
silently (an adapter trained on another base model loads without complaint and answers nonsense).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from toolkit.catalog.files import MIB, excerpt, load_json, safetensors_tensors
from toolkit.catalog.spec import ModelSpec
from toolkit.errors import CatalogError

ADAPTER_CONFIG_LIMIT = 1 * MIB
"""adapter_config.json: PEFT writes ~1 KiB."""
ADAPTER_HEADER_LIMIT = 16 * MIB
"""safetensors header of an adapter: a few hundred bytes per tensor."""
ALLOWED_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""vllm/config/lora.py `MaxLoRARanks`: the only values `--max-lora-rank` accepts."""
DEFAULT_MAX_LORAS = 1
"""vllm/config/lora.py `LoRAConfig.max_loras`."""
DEFAULT_MAX_LORA_RANK = 16
"""vllm/config/lora.py `LoRAConfig.max_lora_rank`."""
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

# architecture → (qkv slices, gate_up slices, embed_tokens + lm_head wrapped), read off the vLLM 0.32.0 class's
# packed_modules_mapping / embedding_modules. Anything else fails closed: a wrong formula is worse than none.
LORA_ARCHITECTURES = {
    "LlamaForCausalLM": (3, 2, True),
    "MistralForCausalLM": (3, 2, False),
    "Qwen2ForCausalLM": (3, 2, False),
    "Qwen3ForCausalLM": (3, 2, True),
    "GemmaForCausalLM": (3, 2, False),
    "Gemma2ForCausalLM": (3, 2, False),
    "Gemma3ForCausalLM": (3, 2, False),
    "Phi3ForCausalLM": (1, 1, True),
}
_UNSUPPORTED_INIT = ("pissa", "olora", "corda", "loftq")  # they change the base weights (peft_helper.py)


def lora_layout(model: ModelSpec) -> tuple[int, int, bool]:
    """(qkv slices, gate_up slices, embeddings wrapped) of vLLM's LoRA wrappers for this model."""
    if model.moe is not None or model.mla is not None or model.architecture not in LORA_ARCHITECTURES:
        kind = "MoE" if model.moe else "MLA" if model.mla else model.architecture
        raise CatalogError(
            f"LoRA for {model.id} ({kind}) is not planned: selfhost sizes and checks adapters only for dense "
            f"{', '.join(sorted(LORA_ARCHITECTURES))}",
            fix="drop --lora, or merge the adapter into the weights and plan the merged checkpoint",
        )
    return LORA_ARCHITECTURES[model.architecture]


def target_modules(model: ModelSpec) -> tuple[str, ...]:
    """Module names vLLM accepts in an adapter for this model (its `expected_lora_modules`)."""
    qkv, _, embed = lora_layout(model)
    mods = ("q_proj", "k_proj", "v_proj") if qkv == 3 else ("qkv_proj",)
    mods += ("o_proj",)
    if not model.mlp_gated:
        mods += ("up_proj",)
    else:
        mods += ("gate_proj", "up_proj") if qkv == 3 else ("gate_up_proj",)
    mods += ("down_proj",)
    return mods + (("embed_tokens", "lm_head") if embed else ())


def _geometry(model: ModelSpec) -> dict[str, tuple[int, int]]:
    """Module → (in, out) features of the base layer (PEFT: lora_A [r, in], lora_B [out, r])."""
    H, I, V = model.hidden_size, model.intermediate_size, model.vocab_size
    q, kv = model.num_attention_heads * model.head_dim, model.num_key_value_heads * model.head_dim
    return {"q_proj": (H, q), "k_proj": (H, kv), "v_proj": (H, kv), "qkv_proj": (H, q + 2 * kv),
            "o_proj": (q, H), "gate_proj": (H, I), "up_proj": (H, I), "gate_up_proj": (H, 2 * I),
            "down_proj": (I, H), "embed_tokens": (V, H), "lm_head": (H, V)}


def round_rank(rank: int) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds `rank`."""
    for allowed in ALLOWED_RANKS:
        if rank <= allowed:
            return allowed
    raise CatalogError(f"LoRA rank {rank} is above vLLM's largest --max-lora-rank {ALLOWED_RANKS[-1]}",
                       fix="retrain the adapter at a lower rank")


@dataclass(frozen=True)
class Adapter:
    name: str
    """Served model name (`--lora-modules NAME=…`)."""
    path: str
    """Absolute directory on the control node."""
    rank: int
    """Largest rank in the adapter (r and rank_pattern)."""
    base_model: str
    """adapter_config.json base_model_name_or_path."""
    modules: tuple[str, ...]
    """Module kinds the tensors adapt (q_proj, …)."""
    tensor_bytes: int
    """Tensor bytes as vLLM holds them in host RAM (2 bytes per element: the 16-bit LoRA dtype)."""


def _fail(where: Path, what: str, fix: str) -> CatalogError:
    return CatalogError(f"{where}: {what}", fix=fix)


def _norm(name: str) -> str:
    return name.strip().rstrip("/").lower()


def _is_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") != 1


def base_matches(base: str, accepted: list[str]) -> bool:
    """A hub id matches case-insensitively; a local path (as PEFT writes it) by its last component."""
    b = _norm(base)
    if not b:
        return False
    names = {_norm(a) for a in accepted if a}
    if b in names:
        return True
    if _is_path(b):
        return b.split("/")[-1] in {n.split("/")[-1] for n in names}
    return False


def check_adapter(name: str, path: str | Path, model: ModelSpec, accepted_bases: list[str], *,
                  max_lora_rank: int | None = None) -> Adapter:
    """Read and check one adapter directory; one-line CatalogError naming file, key and fix on any problem."""
    if not NAME_RE.match(name or ""):
        raise CatalogError(f"--lora {excerpt(name)}: not a valid adapter name",
                           fix="use letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)")
    d = Path(path).expanduser()
    if not d.is_dir():
        raise CatalogError(f"--lora {name}={excerpt(str(path), 80)}: not a directory",
                           fix="give the local adapter directory (adapter_config.json + adapter_model.safetensors); hub ids are not fetched")
    d = d.resolve()
    cfg_file = d / "adapter_config.json"
    cfg = load_json(cfg_file, limit=ADAPTER_CONFIG_LIMIT, what="adapter_config.json", error=CatalogError)
    if not isinstance(cfg, dict):
        raise _fail(cfg_file, "not a JSON object", "save the adapter again with PEFT's save_pretrained")
    peft_type = cfg.get("peft_type")
    if peft_type != "LORA":
        raise _fail(cfg_file, f"peft_type is {excerpt(peft_type)}, vLLM serves only LORA adapters",
                    "train a LoRA adapter (PEFT LoraConfig)")
    r = cfg.get("r")
    pattern = cfg.get("rank_pattern") or {}
    ranks = [r, *(pattern.values() if isinstance(pattern, dict) else [None])]
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in ranks):
        raise _fail(cfg_file, f"r / rank_pattern must be positive integers (r={excerpt(r)})", "save the adapter again with PEFT")
    rank = max(ranks)
    if rank > ALLOWED_RANKS[-1]:
        raise _fail(cfg_file, f"r {rank} is above vLLM's largest --max-lora-rank {ALLOWED_RANKS[-1]}", "retrain at a lower rank")
    if max_lora_rank is not None and rank > max_lora_rank:
        raise _fail(cfg_file, f"r {rank} is above --max-lora-rank {max_lora_rank} (vLLM refuses the adapter)",
                    f"pass --max-lora-rank {round_rank(rank)} (or omit it: the adapters' rank rounded up to a value vLLM accepts)")
    base = cfg.get("base_model_name_or_path")
    if not isinstance(base, str) or not base.strip():
        raise _fail(cfg_file, "base_model_name_or_path is missing; cannot prove the adapter was trained on this model",
                    f"set it to {accepted_bases[0]} if that is the model it was trained on")
    if not base_matches(base, accepted_bases):
        raise _fail(cfg_file, f"base_model_name_or_path {excerpt(base, 80)} is not the planned model "
                              f"(accepted: {', '.join(excerpt(a, 60) for a in dict.fromkeys(accepted_bases))}); "
                              "an adapter on another base loads silently and answers nonsense",
                    f"plan the model {excerpt(base, 80)}, or use an adapter trained on {accepted_bases[0]}")
    if cfg.get("modules_to_save"):
        raise _fail(cfg_file, f"modules_to_save {excerpt(cfg['modules_to_save'], 60)}: vLLM does not serve fully "
                              "fine-tuned modules in an adapter", "retrain without modules_to_save (LoRA on those modules instead)")
    for key, bad in (("use_dora", True), ("lora_bias", True), ("use_qalora", True)):
        if cfg.get(key) is bad:
            raise _fail(cfg_file, f"{key} is true: vLLM does not support it", f"retrain with {key}=false")
    if cfg.get("bias", "none") != "none":
        raise _fail(cfg_file, f"bias is {excerpt(cfg.get('bias'))}: vLLM does not support adapter biases", 'retrain with bias="none"')
    init = cfg.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower().startswith(_UNSUPPORTED_INIT):
        raise _fail(cfg_file, f"init_lora_weights {excerpt(init)} changes the base weights; vLLM serves the unmodified base",
                    "convert it with PEFT's path_initial_model_for_weight_conversion")
    for key in ("layer_replication", "alora_invocation_tokens", "use_bdlora"):
        if cfg.get(key):
            raise _fail(cfg_file, f"{key} is set: vLLM does not support it", f"retrain without {key}")
    allowed = target_modules(model)
    targets = cfg.get("target_modules")
    if isinstance(targets, list):
        extra = sorted({str(t) for t in targets} - set(allowed))
        if extra:
            raise _fail(cfg_file, f"target_modules {excerpt(extra, 60)} are not LoRA modules vLLM has for "
                                  f"{model.architecture} ({', '.join(allowed)})", "retrain targeting only those modules")
    elif not isinstance(targets, str):
        raise _fail(cfg_file, "target_modules is missing", "save the adapter again with PEFT")
    modules, nbytes = _check_tensors(d, model, allowed, rank_of=_rank_of(r, pattern))
    return Adapter(name=name, path=str(d), rank=rank, base_model=base, modules=modules, tensor_bytes=nbytes)


def _rank_of(r: int, pattern: dict):
    def rank(module: str) -> int:
        for key, value in pattern.items():  # PEFT's get_pattern_key: a suffix at a '.' boundary, first wins
            if re.match(rf"(.*\.)?({key})$", module):
                return value
        return r
    return rank


_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.weight)?$")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _check_tensors(d: Path, model: ModelSpec, allowed: tuple[str, ...], rank_of) -> tuple[tuple[str, ...], int]:
    st = d / "adapter_model.safetensors"
    if not st.is_file():
        other = [p.name for p in (d / "adapter_model.bin", d / "adapter_model.pt") if p.is_file()]
        raise _fail(d, f"no adapter_model.safetensors{' (only ' + other[0] + ')' if other else ''}",
                    "save with PEFT's save_pretrained(safe_serialization=True); pickled .bin adapters are not shipped")
    header = read_header(st)
    geo = _geometry(model)
    seen: set[str] = set()
    pairs: dict[str, set[str]] = {}
    nbytes = 0
    for tensor, info in header.items():
        if tensor.endswith((".embed_tokens.base_layer.weight", ".lm_head.base_layer.weight")):
            continue  # vLLM skips these copies of the base embeddings
        m = _LORA_KEY.match(tensor)
        if not m:
            raise _fail(st, f"tensor {excerpt(tensor, 80)} is not a LoRA factor (a fully saved module?)",
                        "retrain without modules_to_save / trainable tokens")
        module, kind = m.group("module"), m.group("kind")
        suffix = module.rsplit(".", 1)[-1]
        if suffix not in allowed:
            raise _fail(st, f"tensor {excerpt(tensor, 80)} adapts {suffix}, which vLLM does not wrap for "
                            f"{model.architecture} ({', '.join(allowed)})", "retrain targeting only those modules")
        layer = _LAYER.search(module)
        if layer and int(layer.group(1)) >= model.num_hidden_layers:
            raise _fail(st, f"tensor {excerpt(tensor, 80)} is for layer {layer.group(1)}; the model has "
                            f"{model.num_hidden_layers}", "use an adapter trained on this model")
        shape = info[1]
        r = rank_of(module)
        fan_in, fan_out = geo[suffix]
        want = {"lora_A": [r, fan_in], "lora_B": [fan_out, r],
                "lora_embedding_A": [r, fan_in], "lora_embedding_B": [fan_out, r]}[kind]
        if list(shape) != want:
            raise _fail(st, f"tensor {excerpt(tensor, 80)} has shape {list(shape)}, expected {want} "
                            f"(rank {r}, base {suffix} {fan_in}→{fan_out})", "use an adapter trained on this model at this rank")
        pairs.setdefault(module, set()).add(kind[-1])
        seen.add(suffix)
        n = 1
        for dim in shape:
            n *= dim
        nbytes += 2 * n
    lone = sorted(k for k, v in pairs.items() if v != {"A", "B"})
    if lone:
        raise _fail(st, f"{excerpt(lone[0], 80)} has only one of lora_A / lora_B", "save the adapter again with PEFT")
    if not seen:
        raise _fail(st, "holds no LoRA tensors", "save the adapter again with PEFT")
    return tuple(sorted(seen)), nbytes


def read_header(file: Path) -> dict[str, tuple[str, list[int]]]:
    """Tensor name → (dtype, shape) from a safetensors header (≤ ADAPTER_HEADER_LIMIT); no tensor data is read."""
    tensors = safetensors_tensors(file, limit=ADAPTER_HEADER_LIMIT,
                                  fix="the file is damaged or partly copied: save or copy the adapter again")
    return {name: (dtype, shape) for name, (dtype, shape, _) in tensors.items()}
