"""Site and deployment commands: `init` and `render` (own modules), then `deploy` (here).

`register(app)` is what `toolkit.cli` calls. The `deploy` command is added to this module and
registered at the end of `register`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.commands.lifecycle import command_line, confirm, dry_run_done, finish, run
from toolkit.commands.options import DryRunOpt, InventoryOpt, JsonOpt, PlanArg, YesOpt
from toolkit.commands.render import ForceOpt

EXAMPLES = [
    "selfhost deploy plan.yml -i sites/prod",
    "selfhost deploy plan.yml -i sites/prod --dry-run",
    "selfhost deploy plan.yml -i sites/prod --limit gpu-01 --yes",
    "selfhost deploy plan.yml -i sites/prod --check --json",
]

CheckOpt = Annotated[bool, typer.Option("--check", help="Only check: preflight + end-to-end verify of what is deployed; change nothing.")]
LimitOpt = Annotated[Optional[str], typer.Option("--limit", help="Only these hosts (Ansible pattern, e.g. gpu-01 or 'gpu-*').")]
WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", help="Model folder on this machine (overrides selfhost_weights_source).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Bundle folder (default: build/<plan name>).")]
_KEY_RE = re.compile(r'"Bearer ([0-9A-Za-z._~+/-]{16,})"\s+1;')


def deploy(plan: PlanArg, inventory: InventoryOpt, check: CheckOpt = False, limit: LimitOpt = None,
           yes: YesOpt = False, dry_run: DryRunOpt = False, json: JsonOpt = False,
           weights: WeightsOpt = None, out: OutOpt = None, force: ForceOpt = False) -> None:
    """Render PLAN for SITE, preview the changes (Ansible check mode), ask, then deploy with live progress."""
    from toolkit.commands import output
    from toolkit.deploy import runner
    from toolkit.plan.model import Plan
    from toolkit.render.bundle import render
    from toolkit.render.site import load_site

    the_plan = Plan.load(plan)
    the_plan.require_license_ok("deploy")  # render checks too; this names the command refused
    site = load_site(inventory)
    bundle = render(the_plan, site, out or Path("build") / the_plan.name, weights_source=weights, force=force)
    hosts = [h.name for h in site.hosts]
    report: dict = {"bundle": str(bundle.path)}

    if check:  # read-only health check of what is deployed
        result = run(runner, output, bundle.path, hosts, json, title="check", steps=runner.STEPS, check=True,
                     limit=limit, playbook="check.yml")
        finish(output, json, report | {"check": result.to_dict()}, result)
        return

    from toolkit.operate import releases

    run_rec = runner.run_info(command_line(), site=str(inventory))  # host lock owner + audit
    preview = runner.run(bundle.path, check=True, limit=limit, extravars={"selfhost_run": run_rec})
    report["preview"] = preview.to_dict()
    if not json:
        output.deploy_preview(preview.changed_tasks, list(preview.hosts) or hosts)
    if not preview.ok:
        finish(output, json, report, preview)
    if dry_run:
        return dry_run_done(output, json, report, f"Bundle: {bundle.path}")
    confirm(output, f"Deploy {the_plan.name} to {len(preview.hosts) or len(hosts)} host(s)?", yes=yes,
            what="deploy", fix="pass --yes to deploy non-interactively (review with --dry-run first)")

    key_dir = Path(tempfile.mkdtemp(prefix="selfhost-keys-"))
    try:
        result = run(runner, output, bundle.path, hosts, json, title="deploy", steps=runner.STEPS, limit=limit,
                     key_fetch_dir=key_dir, extravars={"selfhost_run": run_rec})
        keys = _read_keys(key_dir)
    finally:
        shutil.rmtree(key_dir, ignore_errors=True)
    releases.append_audit(bundle.path, result, run=run_rec, plan_digest=the_plan.digest())
    report["deploy"] = result.to_dict()
    if json:
        report["api_keys"] = keys  # shown once; not written anywhere on this machine
    else:
        output.api_keys(keys)
    finish(output, json, report, result)


def _read_keys(key_dir: Path) -> dict[str, str]:
    keys = {}
    for f in sorted(key_dir.glob("*.conf")):
        found = _KEY_RE.findall(f.read_text())
        if found:
            keys[f.stem] = found[0]
    return keys


def register(app: typer.Typer) -> None:
    from toolkit.commands import render, site

    site.register(app)
    render.register(app)
    app.command("deploy", epilog="Examples: " + "; ".join(EXAMPLES))(deploy)
