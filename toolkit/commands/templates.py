"""`selfhost templates list | eject NAME | diff | accept NAME`: own a template without losing upstream fixes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.commands.options import InventoryOpt, JsonOpt

EXAMPLES = [
    "selfhost templates list -i sites/prod",
    "selfhost templates eject gateway/nginx.conf.j2 -i sites/prod",
    "selfhost templates diff -i sites/prod",
    "selfhost templates accept gateway/nginx.conf.j2 -i sites/prod",
]

NameArg = Annotated[str, typer.Argument(help="Template name as `selfhost templates list` shows it.")]
OptionalSite = Annotated[Optional[Path], typer.Option("--inventory", "-i", help="Site folder (from `selfhost init`).")]

app = typer.Typer(help="List, eject and track the Jinja templates a bundle is rendered from.",
                  no_args_is_help=True, epilog="Examples: " + "; ".join(EXAMPLES))


def _tdir(site: Path) -> Path:
    """SITE/templates of a real site folder (load_site validates it: no templates land in a typo'd path)."""
    from toolkit.render.site import load_site

    return load_site(site).templates_dir


@app.command("list")
def list_(inventory: OptionalSite = None, json: JsonOpt = False) -> None:
    """Every packaged template, and whether SITE overrides it."""
    from toolkit.commands import output
    from toolkit.render.template_ops import status

    rows = status(_tdir(inventory) if inventory else None)
    if json:
        output.as_json({"templates": [r.to_dict() for r in rows]})
        return
    output.table(None, ["template", "site"], [[r.name, r.state] for r in rows])
    if inventory is None:
        output.line("pass -i SITE to see which ones the site overrides")


@app.command("eject")
def eject(name: NameArg, inventory: InventoryOpt) -> None:
    """Copy a packaged template into SITE/templates/ to edit it (never overwrites)."""
    from toolkit.commands import output
    from toolkit.render.template_ops import eject as do_eject

    dest = do_eject(_tdir(inventory), name)
    output.line(f"ejected {name} → {dest}")
    output.line(f"edit it; renders for this site now use it. Later upgrades: `selfhost templates diff -i {inventory}`")


@app.command("diff")
def diff(inventory: InventoryOpt, json: JsonOpt = False) -> None:
    """How each ejected template changed upstream since it was ejected, and whether you edited it."""
    from toolkit.commands import output
    from toolkit.render.template_ops import diff as do_diff

    rows = do_diff(_tdir(inventory))
    if json:
        output.as_json({"templates": [r.to_dict() for r in rows]})
        return
    if not rows:
        output.line(f"no ejected templates in {_tdir(inventory)}")
        return
    for r in rows:
        flags = ["upstream changed" if r.upstream_changed else "upstream unchanged",
                 "edited by you" if r.modified else "not edited"]
        output.line(f"{r.name}: {', '.join(flags)}")
        output.line(f"  {r.note}")
        if r.upstream_diff:
            output.line(r.upstream_diff.rstrip("\n"))


@app.command("accept")
def accept(name: NameArg, inventory: InventoryOpt) -> None:
    """After merging upstream changes into your copy by hand, make today's packaged template the baseline."""
    from toolkit.commands import output
    from toolkit.render.template_ops import accept as do_accept

    digest = do_accept(_tdir(inventory), name)
    output.line(f"{name}: baseline is now the packaged template {digest[:12]}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="templates")
