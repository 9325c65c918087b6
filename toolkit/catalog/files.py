"""Bounded readers for files a user hands us: plan.yml, price lists, config.json, site files.

Nothing read from outside is trusted to be small or well-behaved. Every reader:

- refuses anything that is not a regular file (a directory, /dev/zero, a FIFO) before opening it;
- reads at most `limit` bytes (a size cap checked with stat, then enforced by the read itself);
- parses YAML without letting aliases expand (a 342-byte "billion laughs" must not become 390 MB);
- reports problems as one-line `ConfigError`s that name the file and never echo more than a short,
  truncated excerpt of the input.

The catalog is the first stage, so every later stage may import these.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import yaml

from toolkit.errors import ConfigError, SelfhostError

KIB = 1024
MIB = 1024 * KIB

PLAN_LIMIT = 1 * MIB
"""plan.yml: a generated plan is ~3 KiB; anything past 1 MiB is not a plan."""
PRICES_LIMIT = 1 * MIB
"""API price lists (`--api-prices`)."""
CONFIG_JSON_LIMIT = 4 * MIB
"""A Hugging Face config.json (the largest published ones are a few hundred KiB)."""
SITE_LIMIT = 1 * MIB
"""Site / inventory / assumptions YAML files."""

MAX_ALIASES = 32
"""YAML alias uses allowed in one document (generated files use none)."""
MAX_NODES = 200_000
"""YAML nodes a document may expand to, aliases counted at their expanded size."""
MAX_DEPTH = 64
"""Nesting depth of YAML / JSON documents."""
EXCERPT = 40
"""Longest excerpt of user input any error message echoes."""

_LoaderBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def excerpt(value: Any, limit: int = EXCERPT) -> str:
    """repr of `value`, cut to `limit` characters (error messages never echo more of the input)."""
    try:
        text = repr(value)
    except Exception:  # pragma: no cover - a hostile __repr__
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / KIB:.0f} KiB" if n >= KIB else f"{n} bytes"


def read_bytes_bounded(path: str | Path, limit: int, *, what: str = "file", error: type[SelfhostError] = ConfigError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is a one-line ConfigError."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"{p}: no such {what}") from None
    except OSError as exc:
        raise error(f"{p}: cannot read {what} ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{p}: is a directory, not a {what}", fix=f"give the path of the {what} itself")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{p}: not a regular file (device, pipe or socket); refusing to read it as a {what}")
    if st.st_size > limit:
        raise error(f"{p}: {_size(st.st_size)} is too large for a {what} (limit {_size(limit)})")
    try:
        with p.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"{p}: cannot read {what} ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:  # grew after stat
        raise error(f"{p}: too large for a {what} (limit {_size(limit)})")
    return data


def read_text_bounded(path: str | Path, limit: int, *, what: str = "file", error: type[SelfhostError] = ConfigError) -> str:
    """UTF-8 text of a regular file of at most `limit` bytes (see `read_bytes_bounded`)."""
    data = read_bytes_bounded(path, limit, what=what, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); not a {what}") from None


def _measure(root: yaml.Node, source: str, max_aliases: int, max_nodes: int, error: type[SelfhostError]) -> None:
    """Refuse documents whose aliases expand too far, repeat too often, nest too deep or loop."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    aliases = 0

    def walk(node: yaml.Node, depth: int) -> int:
        nonlocal aliases
        key = id(node)
        if key in sizes:  # a node reached twice is an alias use
            aliases += 1
            if aliases > max_aliases:
                raise error(f"{source}: uses more than {max_aliases} YAML aliases; refusing to expand it")
            return sizes[key]
        if key in active:
            raise error(f"{source}: a YAML alias refers to itself; refusing a recursive document")
        if depth > MAX_DEPTH:
            raise error(f"{source}: nested more than {MAX_DEPTH} levels deep")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += walk(child, depth + 1)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += walk(k, depth + 1) + walk(v, depth + 1)
        active.discard(key)
        if total > max_nodes:
            raise error(f"{source}: expands to more than {max_nodes:,} YAML nodes; refusing it")
        sizes[key] = total
        return total

    walk(root, 0)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what the parser found and where, without the snippet of input PyYAML appends."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {excerpt(str(problem), 80).strip(chr(39))}"


def load_yaml(
    path_or_text: str | Path,
    *,
    limit: int = SITE_LIMIT,
    max_aliases: int = MAX_ALIASES,
    max_nodes: int = MAX_NODES,
    source: str | None = None,
    what: str = "YAML file",
    error: type[SelfhostError] = ConfigError,
) -> Any:
    """Parse one YAML document safely and boundedly.

    A `Path` is read with `read_text_bounded`; a `str` is the document itself (`source` names it in
    errors). Only the safe YAML subset is constructed; aliases are counted and their expansion is
    capped before anything is built from them.
    """
    if isinstance(path_or_text, Path):
        source = source or str(path_or_text)
        text = read_text_bounded(path_or_text, limit, what=what, error=error)
    else:
        source = source or "<text>"
        text = path_or_text
        if len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit:
            raise error(f"{source}: too large for a {what} (limit {_size(limit)})")
    loader = _LoaderBase(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, source, max_aliases, max_nodes, error)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise error(f"{source}: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise error(f"{source}: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # odd scalars the constructor rejects
        raise error(f"{source}: not valid YAML ({excerpt(str(exc), 80)})") from None
    finally:
        loader.dispose()


def load_json(
    path: str | Path, *, limit: int = CONFIG_JSON_LIMIT, what: str = "JSON file", error: type[SelfhostError] = ConfigError
) -> Any:
    """Parse one JSON file of at most `limit` bytes; errors are one line naming the file."""
    text = read_text_bounded(path, limit, what=what, error=error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise error(f"{path}: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with too many digits
        raise error(f"{path}: not valid JSON ({excerpt(str(exc), 80)})") from None


def safetensors_tensors(file: Path, *, limit: int, fix: str) -> dict[str, tuple[str, list[int], int]]:
    """Tensor name → (dtype, shape, bytes) from a safetensors file's header (at most `limit` bytes of
    JSON); no tensor data is read. A damaged or oversized header is a one-line CatalogError with `fix`."""
    from toolkit.errors import CatalogError

    def fail(what: str) -> CatalogError:
        return CatalogError(f"{file}: {what}", fix=fix)

    try:
        size = file.stat().st_size
        with file.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise fail("corrupt safetensors header (file shorter than 8 bytes)")
            n = int.from_bytes(raw, "little")
            if n < 2 or n > limit or n > size - 8:
                raise fail(f"corrupt safetensors header (length {n} does not fit a {size}-byte file "
                           f"or the {_size(limit)} limit)")
            header = json.loads(f.read(n))
    except OSError as exc:
        raise CatalogError(f"{file}: cannot read ({exc.strerror or exc})", fix="check the path and permissions") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise fail(f"corrupt safetensors header (not JSON: {excerpt(str(exc), 60)})") from None
    if not isinstance(header, dict):
        raise fail("corrupt safetensors header (not a JSON object)")
    data_len = size - 8 - n
    out: dict[str, tuple[str, list[int], int]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], [int(x) for x in info["shape"]], info["data_offsets"]
            if not (0 <= start <= end <= data_len):
                raise ValueError(f"offsets {start}..{end} outside the {data_len}-byte data section")
        except (KeyError, TypeError, ValueError) as exc:
            raise fail(f"corrupt safetensors header (tensor {excerpt(name, 60)}: {excerpt(str(exc), 60)})") from None
        out[name] = (str(dtype), shape, end - start)
    return out
