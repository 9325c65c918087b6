"""SHA-256 manifests of weight folders and image tarballs, with a cache so big models hash once.

The cache is keyed by (absolute path, size, mtime_ns): an unchanged file is never read again, so
re-rendering a 140 GB model costs a `stat` per file. It lives in the site folder, not the bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from toolkit.errors import RenderError

CHUNK = 1 << 20


class HashCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, dict] = {}
        self._dirty = False
        if path.is_file():
            try:
                self._entries = json.loads(path.read_text())
            except ValueError:
                self._entries = {}  # a damaged cache only costs a re-hash

    def sha256(self, file: Path) -> str:
        st = file.stat()
        key = str(file.resolve())
        hit = self._entries.get(key)
        if hit and hit["size"] == st.st_size and hit["mtime_ns"] == st.st_mtime_ns:
            return hit["sha256"]
        digest = hashlib.sha256()
        with file.open("rb") as fh:
            while block := fh.read(CHUNK):
                digest.update(block)
        self._entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}
        self._dirty = True
        return digest.hexdigest()

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self._entries, indent=0, sort_keys=True))
        tmp.replace(self.path)
        self._dirty = False


def weight_files(root: Path) -> list[Path]:
    """Every file under `root`, sorted; dot-folders (e.g. `.cache/huggingface` locks) are skipped."""
    if not root.is_dir():
        raise RenderError(f"{root}: weights folder not found",
                          fix="point --weights (or selfhost_weights_source in group_vars) at the model folder")
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [Path(dirpath) / f for f in filenames if not f.startswith(".")]
    if not files:
        raise RenderError(f"{root}: weights folder is empty")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def manifest(root: Path, cache: HashCache) -> str:
    """`sha256sum` format, relative paths, sorted: the host checks its copy with `sha256sum -c`."""
    lines = [f"{cache.sha256(f)}  {f.relative_to(root).as_posix()}\n" for f in weight_files(root)]
    return "".join(lines)


def total_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in weight_files(root))
