"""The only module that prints. Tables and hints go to the terminal; `--json` prints one JSON document."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from toolkit.errors import SelfhostError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def line(text: str = "", *, style: str | None = None) -> None:
    console.print(text, style=style, markup=False)


def markup(text: str) -> None:
    console.print(text)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title, title_justify="left", show_lines=False)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    console.print(t)


def as_json(data: Any) -> None:
    """One JSON document on stdout, nothing else (scripts parse it)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error(exc: SelfhostError) -> None:
    err_console.print("error: " + exc.message, style="bold red", markup=False)
    if exc.fix:
        err_console.print("To fix: " + exc.fix, markup=False)
    if exc.hint:
        err_console.print("Hint:   " + exc.hint, markup=False)


def warn(text: str) -> None:
    err_console.print("warning: " + text, style="yellow", markup=False)
