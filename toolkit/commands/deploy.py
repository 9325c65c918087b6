"""Site and deployment commands: `init` and `render` (own modules), then `deploy` (here).

`register(app)` is what `toolkit.cli` calls. The `deploy` command is added to this module and
registered at the end of `register`.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from toolkit.commands import render, site

    site.register(app)
    render.register(app)
    # `deploy` registers here, e.g. app.command("deploy")(deploy)
