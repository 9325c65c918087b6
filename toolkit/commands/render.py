"""`selfhost render PLAN -i SITE`: write the deployment bundle for review, then `selfhost deploy`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.commands.options import InventoryOpt, JsonOpt, PlanArg

EXAMPLES = [
    "selfhost render plan.yml -i sites/prod",
    "selfhost render plan.yml -i sites/prod --weights /srv/models/llama-8b --out build/llama-8b",
]

OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Bundle folder (default: build/<plan name>).")]
WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", help="Model folder on this machine (overrides selfhost_weights_source).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the bundle even if files in it were edited or added by hand (they are lost).")]


def render(plan: PlanArg, inventory: InventoryOpt, out: OutOpt = None, weights: WeightsOpt = None,
           force: ForceOpt = False, json: JsonOpt = False) -> None:
    """Render PLAN for the hosts of SITE into a bundle folder (nothing is contacted)."""
    from toolkit.commands import output
    from toolkit.plan.model import Plan
    from toolkit.render.bundle import render as do_render
    from toolkit.render.site import load_site

    the_plan = Plan.load(plan)
    the_plan.require_license_ok("render")  # before the site is read; bundle.render() checks again
    bundle = do_render(the_plan, load_site(inventory), out or Path("build") / the_plan.name, weights_source=weights,
                       force=force)
    if json:
        output.as_json({"bundle": str(bundle.path), "files": bundle.files,
                        "vars": bundle.vars.model_dump(mode="json")})
        return
    output.line(f"rendered {bundle.path}/")
    for name in bundle.files:
        if not name.startswith("project/"):  # the playbook copy is the same every time
            output.line(f"  {name}")
    output.line("  project/  (playbooks)")
    output.line(f"next: review {bundle.path}/files/, then `{deploy_command(plan, inventory, weights, out)}`")


def deploy_command(plan: Path, inventory: Path, weights: Optional[Path], out: Optional[Path]) -> str:
    """The `selfhost deploy` line that deploys what was just rendered (same plan, site, weights, folder)."""
    import shlex

    args = ["selfhost", "deploy", str(plan), "-i", str(inventory)]
    args += ["--weights", str(weights)] if weights is not None else []
    args += ["--out", str(out)] if out is not None else []
    return shlex.join(args)


def register(app: typer.Typer) -> None:
    app.command("render", epilog="Examples: " + "; ".join(EXAMPLES))(render)
