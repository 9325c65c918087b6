"""Eject packaged templates into a site and see how upstream moved since (Copier's idea, no 3-way merge).

    SITE/templates/<name>                 the site's copy (overrides the packaged template at render)
    SITE/templates/.upstream/<name>       the packaged original as it was at eject time (never edited)
    SITE/templates/.selfhost-ejected.yml  name → sha256 of that original, toolkit version (serialized)

`diff` compares the original with today's packaged template (what upstream changed) and the
original with the site's copy (whether the user changed it). Pure functions: they return data and
raise `ConfigError`; the command prints.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from toolkit import __version__
from toolkit.errors import ConfigError
from toolkit.render.templates import list_templates, packaged_dir

RECORD = ".selfhost-ejected.yml"
UPSTREAM = ".upstream"


@dataclass(frozen=True)
class TemplateStatus:
    name: str
    """Template name (relative path under templates/)."""
    packaged_sha256: str
    """Digest of the packaged template now."""
    overridden: bool
    """The site has its own file: renders use it instead of the packaged one."""
    ejected: bool
    """The site's file came from `selfhost templates eject` (recorded)."""
    modified: bool | None
    """The site's copy differs from what was ejected (None when not ejected)."""
    upstream_changed: bool | None
    """The packaged template changed since it was ejected (None when not ejected)."""

    @property
    def state(self) -> str:
        if not self.overridden and not self.ejected:
            return "packaged"
        if not self.ejected:
            return "overridden (not ejected: `diff` cannot track it)"
        if not self.overridden:
            return "ejected, site copy missing (packaged one is used)"
        parts = ["ejected"]
        parts += ["modified"] if self.modified else []
        parts += ["upstream changed"] if self.upstream_changed else []
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {**asdict(self), "state": self.state}


@dataclass(frozen=True)
class EjectedDiff:
    name: str
    """Template name."""
    ejected_sha256: str
    """Digest of the packaged original the site's copy came from."""
    ejected_toolkit_version: str
    """selfhost version that ejected it."""
    packaged_sha256: str | None
    """Digest of the packaged template now (None: it was removed from the toolkit)."""
    site_sha256: str | None
    """Digest of the site's copy (None: the user deleted it)."""
    upstream_changed: bool
    """The packaged template differs from the original."""
    modified: bool
    """The site's copy differs from the original."""
    upstream_diff: str
    """Unified diff original → packaged now ('' when unchanged or the original copy is gone)."""
    note: str
    """What to do, in one line."""

    def to_dict(self) -> dict:
        return asdict(self)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def read_record(templates_dir: Path) -> dict[str, dict]:
    """The eject record: name → {sha256, toolkit_version}. Empty when nothing was ejected."""
    path = Path(templates_dir) / RECORD
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})",
                          fix="restore it from version control, or delete it and eject again") from None
    entries = data.get("templates") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(v, dict) and "sha256" in v for v in entries.values()):
        raise ConfigError(f"{path}: expected `templates: {{NAME: {{sha256: ..., toolkit_version: ...}}}}`",
                          fix="restore it from version control, or delete it and eject again")
    return entries


def _write_record(templates_dir: Path, entries: dict[str, dict]) -> None:
    text = ("# Written by `selfhost templates eject`: the packaged original each site template came from.\n"
            "# `selfhost templates diff` reads it; do not edit.\n")
    text += yaml.safe_dump({"templates": dict(sorted(entries.items()))}, sort_keys=False)
    _atomic_write(Path(templates_dir) / RECORD, text)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _check_name(name: str) -> str:
    names = list_templates()
    if name in names:
        return name
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    raise ConfigError(f"no packaged template '{name}'" + (f" — did you mean '{close[0]}'?" if close else ""),
                      hint="selfhost templates list  shows every name")


def status(templates_dir: Path | None) -> list[TemplateStatus]:
    """Every packaged template and what the site does with it."""
    record = read_record(templates_dir) if templates_dir else {}
    root = packaged_dir()
    result = []
    for name in list_templates():
        packaged = _sha(root / name)
        site = _sha(templates_dir / name) if templates_dir else None
        entry = record.get(name)
        result.append(TemplateStatus(
            name=name, packaged_sha256=packaged or "", overridden=site is not None, ejected=entry is not None,
            modified=None if entry is None or site is None else site != entry["sha256"],
            upstream_changed=None if entry is None else packaged != entry["sha256"],
        ))
    return result


def eject(templates_dir: Path, name: str) -> Path:
    """Copy the packaged template `name` to the site (and its pristine original to .upstream/); never overwrites."""
    templates_dir = Path(templates_dir)
    name = _check_name(name)
    dest = templates_dir / name
    if dest.exists():
        raise ConfigError(f"{dest} already exists; refusing to overwrite your copy",
                          fix=f"see how upstream changed with `selfhost templates diff -i {templates_dir.parent}`, "
                              f"or move {dest} away and eject again")
    text = (packaged_dir() / name).read_text()
    record = read_record(templates_dir)
    _atomic_write(templates_dir / UPSTREAM / name, text)
    _atomic_write(dest, text)
    record[name] = {"sha256": sha256_text(text), "toolkit_version": __version__}
    _write_record(templates_dir, record)
    return dest


def accept(templates_dir: Path, name: str) -> str:
    """Mark today's packaged `name` as the new baseline (after merging its changes by hand); returns its sha256.

    The site's copy is not touched; `.upstream/` and the record move to the packaged version.
    """
    templates_dir = Path(templates_dir)
    record = read_record(templates_dir)
    if name not in record:
        raise ConfigError(f"'{name}' was not ejected into {templates_dir}",
                          hint=f"selfhost templates diff -i {templates_dir.parent}  lists the ejected ones")
    name = _check_name(name)
    text = (packaged_dir() / name).read_text()
    _atomic_write(templates_dir / UPSTREAM / name, text)
    record[name] = {"sha256": sha256_text(text), "toolkit_version": __version__}
    _write_record(templates_dir, record)
    return record[name]["sha256"]


def diff(templates_dir: Path) -> list[EjectedDiff]:
    """For every ejected template: how the packaged one changed since, and whether the site's copy was edited."""
    templates_dir = Path(templates_dir)
    result = []
    for name, entry in sorted(read_record(templates_dir).items()):
        original_path = templates_dir / UPSTREAM / name
        packaged_path = packaged_dir() / name
        packaged, site = _sha(packaged_path), _sha(templates_dir / name)
        changed, modified = packaged != entry["sha256"], site is not None and site != entry["sha256"]
        text = ""
        if changed and packaged is not None and original_path.is_file():
            text = "".join(difflib.unified_diff(
                original_path.read_text().splitlines(keepends=True), packaged_path.read_text().splitlines(keepends=True),
                fromfile=f"{name} (ejected from selfhost {entry.get('toolkit_version', '?')})",
                tofile=f"{name} (packaged in selfhost {__version__})"))
        result.append(EjectedDiff(
            name=name, ejected_sha256=entry["sha256"], ejected_toolkit_version=str(entry.get("toolkit_version", "?")),
            packaged_sha256=packaged, site_sha256=site, upstream_changed=changed, modified=modified,
            upstream_diff=text, note=_note(name, templates_dir, packaged, site, changed, modified,
                                           original_path.is_file()),
        ))
    return result


def _note(name: str, tdir: Path, packaged: str | None, site: str | None, changed: bool, modified: bool,
          have_original: bool) -> str:
    if packaged is None:
        return "the toolkit no longer ships this template: renders no longer use it; delete your copy"
    if site is None:
        return f"your copy is gone, so the packaged template is used; drop it from {tdir / RECORD} or eject again"
    if not changed:
        return "upstream unchanged" + ("; your edits stay in force" if modified else "; your copy is still identical")
    if not have_original:
        return f"upstream changed but {tdir / UPSTREAM / name} is missing, so no diff; compare by hand"
    if not modified:
        return f"upstream changed and you never edited your copy: delete {tdir / name} and eject again to take it"
    return (f"upstream changed and you edited your copy: apply the diff below to {tdir / name} by hand, "
            f"then `selfhost templates accept {name} -i {tdir.parent}`")
