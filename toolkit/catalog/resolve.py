"""Turn whatever the user typed into a model geometry, a weight format and the repo/path to serve.

Accepted: a catalog id or alias, a sibling listed in variants.yaml, a published quantized repo id
(`Qwen/Qwen2.5-72B-Instruct-AWQ` → catalog base + awq), a local Hugging Face directory, a `.gguf` file, or
a bare `config.json` (planned from its geometry before any download).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from toolkit import catalog
from toolkit.errors import CatalogError
from toolkit.catalog.spec import ModelSpec, QuantSpec, Strict


class ResolvedModel(Strict):
    spec: ModelSpec
    """Geometry used for sizing (catalog entry, or built from config.json / the GGUF header)."""
    repo_id: str
    """What to serve: the repo id as given, or the absolute local path."""
    base_id: str
    """Catalog id whose entry supplied the geometry/licence; the local path when nothing matched."""
    quant: QuantSpec
    """Weight format of the checkpoint (`none` for bf16/fp16)."""
    source: Literal["catalog", "variant", "local", "gguf"]
    """How it was found."""
    local_path: str | None = None
    """Absolute path of a local directory or GGUF file."""
    weight_bytes: int | None = None
    """Exact weight bytes as vLLM loads them, when read from the files."""
    embedding_bytes: int | None = None
    """Of which embedding + lm_head bytes (exact, when read from files)."""
    prequantized: bool = False
    """The checkpoint is already quantized: vLLM detects it, no --quantization flag is needed."""

    @property
    def license(self) -> str:
        return self.spec.license


def resolve_model(ref: str) -> ResolvedModel:
    """Resolve a model reference (see module doc); unknown input is a CatalogError with a did-you-mean."""
    ref = ref.strip()
    if not ref:
        raise CatalogError("empty model name", hint="selfhost models")
    if _looks_like_path(ref):
        from toolkit.catalog import checkpoint

        path = Path(ref).expanduser()
        if not path.exists():
            raise CatalogError(
                f"{path}: no such file or directory",
                fix="give an existing model directory (config.json + *.safetensors) or .gguf file, or a repo id",
            )
        try:
            if path.is_dir():
                return checkpoint.from_directory(path)
            if path.suffix.lower() == ".json":  # a bare config.json copied from a model page
                return checkpoint.from_config_file(path)
            return checkpoint.from_gguf(path)
        except (ValueError, TypeError, ArithmeticError, KeyError, IndexError, AttributeError, RecursionError) as exc:
            raise checkpoint.unusable(path, exc) from None  # "eighty" layers, zero heads: one line, not a traceback

    found = catalog.find_model(ref)
    if found is not None:
        spec, via_variant = found
        q = suffix_quant(ref)
        if q is not None:  # a quantized repo listed in variants.yaml
            return _resolved(spec, ref, q, "variant", prequantized=True)
        # An alias names the catalog checkpoint itself; a sibling repo id is served as given.
        return _native(spec, ref if via_variant else spec.id, "variant" if via_variant else "catalog")

    q = suffix_quant(ref)
    stripped = _strip_suffix(ref, q) if q is not None else ref
    spec = find_by_name(stripped)
    if spec is not None:
        if q is not None:
            return _resolved(spec, ref, q, "variant", prequantized=True)
        return _native(spec, ref, "variant")  # re-upload / fine-tune with the catalog geometry

    catalog.model(stripped if q is not None else ref)  # raises CatalogError with a did-you-mean
    raise AssertionError("unreachable")


def _looks_like_path(ref: str) -> bool:
    if ref.startswith(("/", "./", "../", "~", ".\\")) or ref.lower().endswith((".gguf", ".json")):
        return True
    # `org/name` is a repo id unless such a directory exists here.
    return Path(ref).exists()


def _resolved(spec: ModelSpec, repo_id: str, q: QuantSpec, source, *, prequantized: bool) -> ResolvedModel:
    return ResolvedModel(spec=spec, repo_id=repo_id, base_id=spec.id, quant=q, source=source, prequantized=prequantized)


def _native(spec: ModelSpec, repo_id: str, source) -> ResolvedModel:
    """A catalog checkpoint in its published format (gpt-oss ships mxfp4, DeepSeek-V3 fp8)."""
    if spec.native_quantization:
        return _resolved(spec, repo_id, catalog.quant(spec.native_quantization), source, prequantized=True)
    return _resolved(spec, repo_id, catalog.quant("none"), source, prequantized=False)


@lru_cache(maxsize=None)
def _suffixes() -> tuple[tuple[str, str], ...]:
    """(lower-case suffix, quant name), longest first so `-FP8-dynamic` wins over `-FP8`."""
    pairs = {(s.lower(), q.name) for q in catalog.quantizations().values() for s in q.repo_suffixes}
    return tuple(sorted(pairs, key=lambda p: (-len(p[0]), p[0])))


def suffix_quant(repo_id: str) -> QuantSpec | None:
    """The quantization a repo id's suffix signals (`...-GPTQ-Int4` → gptq), or None."""
    name = repo_id.lower()
    for suffix, qname in _suffixes():
        if name.endswith(suffix):
            return catalog.quant(qname)
    return None


def _strip_suffix(repo_id: str, q: QuantSpec) -> str:
    name = repo_id.lower()
    for suffix, qname in _suffixes():
        if qname == q.name and name.endswith(suffix):
            return repo_id[: -len(suffix)]
    return repo_id


def _name_key(repo_id: str) -> str:
    """Org-less, lower-case repo name with Meta's old prefix dropped: Meta-Llama-3.1-8B ≈ Llama-3.1-8B."""
    name = repo_id.rsplit("/", 1)[-1].lower()
    return re.sub(r"^meta-llama-", "llama-", name)


@lru_cache(maxsize=None)
def _name_index() -> dict[str, ModelSpec | None]:
    """Repo-name key → spec over catalog ids and variant siblings; None marks an ambiguous name."""
    index: dict[str, ModelSpec | None] = {}

    def add(key: str, spec: ModelSpec) -> None:
        if key in index and index[key] is not None and index[key].id != spec.id:
            index[key] = None
        else:
            index.setdefault(key, spec)

    for spec in catalog.models():
        add(_name_key(spec.id), spec)
    for sibling, target in catalog.variants().items():
        found = catalog.find_model(target)
        if found is not None:
            add(_name_key(sibling), found[0])
    return index


def find_by_name(repo_id: str) -> ModelSpec | None:
    """Catalog entry whose repo *name* matches, ignoring the org (`RedHatAI/Llama-3.3-70B-Instruct`)."""
    found = catalog.find_model(repo_id)
    if found is not None:
        return found[0]
    return _name_index().get(_name_key(repo_id))


@lru_cache(maxsize=None)
def _prequantized() -> dict[str, dict[str, str]]:
    """Catalog id (lower case) → {quant name → published pre-quantized repo id}, from prequantized.yaml."""
    data = catalog._read_yaml("prequantized.yaml") or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CatalogError("catalog/prequantized.yaml: expected catalog id → {quantization: repo id}")
    return {str(k).lower(): {str(q): str(r) for q, r in v.items()} for k, v in data.items()}


def prequantized_repo(base_id: str, quant: str) -> str | None:
    """A published checkpoint of catalog model `base_id` already in format `quant`, or None."""
    return _prequantized().get(base_id.lower(), {}).get(quant)
