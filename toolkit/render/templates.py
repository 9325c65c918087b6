"""Template lookup: a site's `templates/<name>` overrides the packaged `templates/<name>`.

Jinja runs with StrictUndefined: a template that names a missing field fails the render instead of
writing an empty string into a config file. Only `*.j2` files are templates. Site templates are
user input: every template runs in Jinja's immutable sandbox (no attribute tricks such as
`''.__class__`, no mutating the context). The `shquote` filter quotes a value for a POSIX shell.
"""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

import jinja2
import jinja2.sandbox

from toolkit.errors import RenderError
from toolkit.resources import data_dir


def packaged_dir() -> Path:
    return data_dir("templates")


def list_templates() -> list[str]:
    """Names (relative paths, `/`-separated) of every packaged template."""
    root = packaged_dir()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.j2") if p.is_file())


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Templates:
    """The templates one render uses: the site's overrides first, then the packaged set."""

    def __init__(self, override_dir: Path | None = None) -> None:
        self.override_dir = override_dir
        self.packaged = packaged_dir()
        search = [str(d) for d in (override_dir, self.packaged) if d is not None]
        self.env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(search),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,  # a `{% for %}` line leaves no blank line behind
            lstrip_blocks=True,
            autoescape=False,
        )
        self.env.filters["shquote"] = shquote

    def source(self, name: str) -> Path:
        """File the name resolves to (override when present)."""
        if self.is_overridden(name):
            return self.override_dir / name  # type: ignore[operator]
        path = self.packaged / name
        if not path.is_file():
            raise RenderError(f"template '{name}' not found in {self.packaged}")
        return path

    def is_overridden(self, name: str) -> bool:
        return self.override_dir is not None and (self.override_dir / name).is_file()

    def sha256(self, name: str) -> str:
        """Digest of the template actually used (recorded in the bundle lock)."""
        return sha256_file(self.source(name))

    def render(self, name: str, context: dict) -> str:
        try:
            return self.env.get_template(name).render(**context)
        except jinja2.UndefinedError as exc:
            where = self.source(name)
            raise RenderError(f"{where}: {exc.message}",
                              fix="use only the fields listed in templates/README.md") from None
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"{exc.filename or name}:{exc.lineno}: {exc.message}") from None
        except jinja2.sandbox.SecurityError as exc:
            raise RenderError(f"{self.source(name)}: refused by the template sandbox ({exc})",
                              fix="use only the fields listed in templates/README.md") from None


def shquote(value) -> str:
    """`value` as one word for a POSIX shell (the runbook's copy-paste snippets)."""
    return shlex.quote(str(value))
