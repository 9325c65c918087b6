"""Find the data directories that ship with the toolkit (templates, playbooks, inventories).

A wheel carries them as `toolkit/_data/<name>` (pyproject force-include); a source checkout or an
editable install reads the repository's top-level folders, so edits show up without reinstalling.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import RenderError

_PACKAGE = Path(__file__).resolve().parent
_NAMES = ("templates", "playbooks", "inventories")


def data_dir(name: str) -> Path:
    """Directory of the packaged data set `name` (one of templates, playbooks, inventories)."""
    if name not in _NAMES:
        raise ValueError(f"unknown data directory {name!r} (expected one of {', '.join(_NAMES)})")
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise RenderError(
        f"packaged data folder '{name}' not found next to {_PACKAGE}",
        fix="reinstall selfhost (pip install --force-reinstall selfhost)",
    )
