"""The built-in catalog: models, licences, GPUs, quantizations and API prices, plus name lookups.

Data files ship inside the package and are read with importlib.resources, so a non-editable install
works from any directory. Everything is loaded once (lru_cache) and validated against toolkit.catalog.spec;
a bad built-in entry is a ConfigError naming the file and entry, never a traceback.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from toolkit.errors import CatalogError, ConfigError
from toolkit.catalog.spec import ApiPriceList, GpuSpec, LicenseSpec, ModelSpec, QuantSpec, Strict

UNKNOWN_LICENSE = LicenseSpec(
    id="unknown",
    name="Unknown licence",
    url="",
    osi_approved=False,
    commercial_use=False,
    notes="Not in the catalog (local or GGUF weights): check the model card before any use.",
)

# Short names that several SKUs share resolve to the entry that lists them as an alias; these are
# documented here so `selfhost gpus` and the error text can say so.
GPU_DEFAULTS = {"A100": "A100-80GB-SXM", "H100": "H100-SXM", "A100-40GB": "A100-40GB-SXM"}

# Vendor words nvidia-smi / rocm-smi prefix to product names; dropped when matching GPU names.
_GPU_VENDOR_WORDS = re.compile(r"^(nvidia|geforce|tesla|quadro|amd|instinct|radeon)+")

# libyaml's C parser reads the catalog ~20x faster than the pure-Python one (about 0.5 s saved on every
# `selfhost plan`); PyYAML built without libyaml falls back to the same-behaving SafeLoader.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(text: str) -> Any:
    """yaml.safe_load with the C loader when available (same safe subset of YAML)."""
    return yaml.load(text, Loader=_Loader)


# ---------------------------------------------------------------- file loading


def _read_yaml(name: str) -> Any:
    """Parse one packaged YAML file; a missing file reads as None (a catalog still being written)."""
    res = resources.files(__name__).joinpath(name)
    if not res.is_file():
        return None
    try:
        return _load_yaml(res.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"catalog/{name}: not valid YAML ({exc})") from None


def _entries(data: Any, key: str, name: str) -> list[dict]:
    """A list of mappings, whether the file is a bare list, `{key: [...]}` or `{id: {...}}`."""
    if data is None:
        return []
    if isinstance(data, dict) and key in data:
        data = data[key]
    if isinstance(data, dict):
        data = [{"id": k, **(v or {})} for k, v in data.items()]
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise ConfigError(f"catalog/{name}: expected a list of mappings")
    return data


def _validate(cls: type[Strict], entries: list[dict], name: str, label: str) -> list:
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(cls.model_validate(entry))
        except ValidationError as exc:
            from toolkit.catalog.spec import validation_error

            raise validation_error(exc, cls, f"catalog/{name}[{i}] ({entry.get(label, '?')})") from None
    return out


# ---------------------------------------------------------------- tables


@lru_cache(maxsize=None)
def _models() -> tuple[ModelSpec, ...]:
    return tuple(
        _validate(ModelSpec, _entries(_read_yaml("models.yaml"), "models", "models.yaml"), "models.yaml", "id")
    )


def models() -> list[ModelSpec]:
    """Every catalog model, in file order."""
    return list(_models())


@lru_cache(maxsize=None)
def _licenses() -> dict[str, LicenseSpec]:
    entries = _entries(_read_yaml("licenses.yaml"), "licenses", "licenses.yaml")
    table = {lic.id: lic for lic in _validate(LicenseSpec, entries, "licenses.yaml", "id")}
    table.setdefault(UNKNOWN_LICENSE.id, UNKNOWN_LICENSE)
    return table


def licenses() -> dict[str, LicenseSpec]:
    """Licence id → LicenseSpec, always including `unknown`."""
    return dict(_licenses())


@lru_cache(maxsize=None)
def _gpus() -> tuple[GpuSpec, ...]:
    return tuple(_validate(GpuSpec, _entries(_read_yaml("gpus.yaml"), "gpus", "gpus.yaml"), "gpus.yaml", "name"))


def gpus() -> list[GpuSpec]:
    """Every catalog GPU, in file order."""
    return list(_gpus())


@lru_cache(maxsize=None)
def _quantizations() -> dict[str, QuantSpec]:
    entries = _entries(_read_yaml("quantizations.yaml"), "quantizations", "quantizations.yaml")
    return {q.name: q for q in _validate(QuantSpec, entries, "quantizations.yaml", "name")}


def quantizations() -> dict[str, QuantSpec]:
    """Quantization name → QuantSpec (`none` included)."""
    return dict(_quantizations())


@lru_cache(maxsize=None)
def variants() -> dict[str, str]:
    """Sibling repo id (lower case) → catalog id, from variants.yaml (empty when the file is absent)."""
    data = _read_yaml("variants.yaml")
    if isinstance(data, dict) and isinstance(data.get("variants"), dict):
        data = data["variants"]
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("catalog/variants.yaml: expected a mapping of repo id → catalog id")
    return {str(k).lower(): str(v) for k, v in data.items()}


@lru_cache(maxsize=None)
def api_prices(path: Path | None = None) -> ApiPriceList:
    """The closed-API price list; a user file (same format) replaces the built-in one."""
    if path is None:
        data, source = _read_yaml("api_prices.yaml"), "catalog/api_prices.yaml"
    else:
        from toolkit.catalog.files import PRICES_LIMIT, load_yaml  # bounded: size, aliases, regular files only

        source = str(path)
        if not Path(path).exists():
            raise ConfigError(f"{path}: no such API price file", fix="give an existing YAML file")
        data = load_yaml(Path(path), limit=PRICES_LIMIT, what="price list")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with as_of, source, default and prices")
    try:
        prices = ApiPriceList.model_validate(data)
    except ValidationError as exc:
        from toolkit.catalog.spec import validation_error

        raise validation_error(exc, ApiPriceList, source) from None
    keys = [f"{p.provider}/{p.model}" for p in prices.prices]
    if prices.default not in keys:
        raise ConfigError(f"{source}: default '{prices.default}' is not one of the prices ({', '.join(keys)})")
    return prices


# ---------------------------------------------------------------- lookups


def _suggest(name: str, choices: dict[str, str], norm=str.lower) -> str:
    """' — did you mean X?' text (empty when nothing is close); choices maps spelling → entry it names."""
    by_key: dict[str, tuple[str, str]] = {}
    for spelling, entry in choices.items():
        by_key.setdefault(norm(spelling), (spelling, entry))
    shown: dict[str, str] = {}  # one suggestion per entry
    for key in difflib.get_close_matches(norm(name), list(by_key), n=8, cutoff=0.6):
        spelling, entry = by_key[key]
        shown.setdefault(entry, spelling)
    if not shown:
        return ""
    return " — did you mean " + " or ".join(f"'{s}'" for s in list(shown.values())[:3]) + "?"


@lru_cache(maxsize=None)
def _model_index() -> dict[str, ModelSpec]:
    index: dict[str, ModelSpec] = {}
    for spec in _models():
        for key in [spec.id, *spec.aliases]:
            index.setdefault(key.lower(), spec)
    return index


def find_model(name: str) -> tuple[ModelSpec, bool] | None:
    """(spec, via_variant) for a catalog id or alias, or a sibling listed in variants.yaml; else None."""
    key = name.strip().lower()
    index = _model_index()
    if key in index:
        return index[key], False
    target = variants().get(key)
    if target is not None and target.lower() in index:
        return index[target.lower()], True
    return None


def model(name: str) -> ModelSpec:
    """A model by repo id (case-insensitive), alias, or sibling repo id from variants.yaml."""
    found = find_model(name)
    if found is not None:
        return found[0]
    choices = {k: s.id for s in _models() for k in (s.id, *s.aliases)}
    raise CatalogError(
        f"unknown model '{name}'{_suggest(name, choices)}",
        fix="give a catalog id or alias, a quantized repo id of one (e.g. ...-AWQ), "
        "a local model directory or a .gguf file",
        hint="selfhost models",
    )


def _gpu_key(name: str) -> str:
    """Case- and punctuation-insensitive GPU key: 'NVIDIA H100 80GB HBM3' → 'h10080gbhbm3'."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return _GPU_VENDOR_WORDS.sub("", key) or key


@lru_cache(maxsize=None)
def _gpu_index() -> dict[str, GpuSpec]:
    index: dict[str, GpuSpec] = {}
    for spec in _gpus():
        for alias in [spec.name, *spec.aliases]:
            key = _gpu_key(alias)
            other = index.get(key)
            if other is not None and other.name != spec.name:
                raise ConfigError(f"catalog/gpus.yaml: '{alias}' names both {other.name} and {spec.name}")
            index[key] = spec
    return index


def gpu(name: str) -> GpuSpec:
    """A GPU by name or alias, ignoring case, punctuation and vendor words; exact match only."""
    spec = _gpu_index().get(_gpu_key(name))
    if spec is not None:
        return spec
    choices = {g.name: g.name for g in _gpus()} | {a: g.name for g in _gpus() for a in g.aliases}
    raise CatalogError(
        f"unknown GPU '{name}'{_suggest(name, choices, _gpu_key)}",
        fix="use a catalog GPU name, or size a custom device with --gpu-memory-gib",
        hint="selfhost gpus",
    )


def quant(name: str) -> QuantSpec:
    """A quantization by name, case-insensitive (GGUF types are stored upper case)."""
    table = _quantizations()
    by_lower = {k.lower(): v for k, v in table.items()}
    found = by_lower.get(name.strip().lower().replace("_", "-")) or by_lower.get(name.strip().lower())
    if found is not None:
        return found
    raise CatalogError(
        f"unknown quantization '{name}'{_suggest(name, {k: k for k in table})}",
        fix="use one of: " + ", ".join(table),
    )


from toolkit.catalog.resolve import ResolvedModel, resolve_model  # noqa: E402  (needs the loaders above)

__all__ = [
    "GPU_DEFAULTS",
    "UNKNOWN_LICENSE",
    "ResolvedModel",
    "api_prices",
    "find_model",
    "gpu",
    "gpus",
    "licenses",
    "model",
    "models",
    "quant",
    "quantizations",
    "resolve_model",
    "variants",
]
