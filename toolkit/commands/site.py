"""`selfhost init SITE`: create a site folder from the packaged example."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EXAMPLES = [
    "selfhost init sites/prod",
]

SiteArg = Annotated[Path, typer.Argument(help="Folder to create (must not exist).")]


def init(site: SiteArg) -> None:
    """Create SITE with a commented inventory and settings to fill in (never overwrites)."""
    from toolkit.commands import output
    from toolkit.render.site import init_site

    created = init_site(site)
    output.line(f"created {site}/")
    for path in created:
        output.line(f"  {path.relative_to(site)}")
    output.line(f"next: edit {site}/hosts.yml and {site}/group_vars/inference.yml, "
                f"then `selfhost render plan.yml -i {site}`")


def register(app: typer.Typer) -> None:
    app.command("init", epilog="Example: " + EXAMPLES[0])(init)
