"""`selfhost runbook [TOPIC]`: print an incident page rendered for this deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.commands.options import JsonOpt

EXAMPLES = [
    "selfhost runbook -i sites/prod",
    "selfhost runbook oom-kv-cache -i sites/prod",
    "selfhost runbook leaked-api-key --bundle build/llama-8b",
]


def runbook(
    topic: Annotated[Optional[str], typer.Argument(help="Topic (none: list the topics).")] = None,
    inventory: Annotated[Optional[Path], typer.Option("--inventory", "-i", help="Site folder: use the bundle rendered for it under build/.")] = None,
    bundle: Annotated[Optional[Path], typer.Option("--bundle", help="Bundle folder (default: the one under build/ for the site).")] = None,
    json: JsonOpt = False,
) -> None:
    """Print the runbook page for TOPIC, with this deployment's hosts, ports, model and commands."""
    from toolkit.commands import output
    from toolkit.render import runbook as rb

    hosts = None
    if inventory is not None and bundle is None:
        from toolkit.deploy.locate import last_bundle
        from toolkit.render.site import load_site

        site = load_site(inventory)
        bundle = last_bundle(site)  # the deployment the site recorded, wherever it was rendered
        hosts = [h.name for h in site.hosts]
    where = rb.find_bundle(bundle, hosts)
    if topic is None:
        pages = rb.pages(where)
        if json:
            output.as_json({"bundle": str(where), "topics": [{"topic": p.topic, "title": p.title, "path": str(p.path),
                                                              "rendered": p.path.is_file()} for p in pages]})
            return
        output.table(f"Runbooks of {where}", ["topic", "what"], [[p.topic, p.title] for p in pages])
        output.line("show one: selfhost runbook TOPIC" + (f" -i {inventory}" if inventory else f" --bundle {where}"))
        return
    text = rb.read(where, topic)
    if json:
        output.as_json({"bundle": str(where), "topic": topic, "markdown": text})
        return
    output.line(text.rstrip("\n"))


def register(app: typer.Typer) -> None:
    app.command("runbook", epilog="Examples: " + "; ".join(EXAMPLES))(runbook)
