"""Site and deployment commands: `init` and `render` (own modules), then `deploy` (here).

`register(app)` is what `toolkit.cli` calls. The `deploy` command is added to this module and
registered at the end of `register`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.commands.lifecycle import command_line, confirm, dry_run_done, execute, finish
from toolkit.commands.options import DryRunOpt, InventoryOpt, JsonOpt, PlanArg, YesOpt
from toolkit.commands.render import ForceOpt

EXAMPLES = [
    "selfhost deploy plan.yml -i sites/prod",
    "selfhost deploy plan.yml -i sites/prod --dry-run",
    "selfhost deploy plan.yml -i sites/prod --limit gpu-01 --yes",
    "selfhost deploy plan.yml -i sites/prod --check --json",
    "selfhost deploy plan.yml -i sites/prod --verify-weights --yes",
]

CheckOpt = Annotated[bool, typer.Option("--check", help="Only check: preflight + end-to-end verify of what is deployed; change nothing.")]
LimitOpt = Annotated[Optional[str], typer.Option("--limit", help="Only these hosts (Ansible pattern, e.g. gpu-01 or 'gpu-*').")]
WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", help="Model folder on this machine (overrides selfhost_weights_source).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Bundle folder (default: build/<plan name>).")]
VerifyWeightsOpt = Annotated[bool, typer.Option(
    "--verify-weights", help="Re-hash every weight file (a normal run hashes only files whose size/mtime/ctime changed).")]


def deploy(plan: PlanArg, inventory: InventoryOpt, check: CheckOpt = False, limit: LimitOpt = None,
           yes: YesOpt = False, dry_run: DryRunOpt = False, json: JsonOpt = False,
           weights: WeightsOpt = None, out: OutOpt = None, force: ForceOpt = False,
           verify_weights: VerifyWeightsOpt = False) -> None:
    """Render PLAN for SITE, preview the changes (Ansible check mode), ask, then deploy with live progress."""
    from toolkit.commands import output
    from toolkit.deploy import runner
    from toolkit.operate import operations
    from toolkit.plan.model import Plan
    from toolkit.render import multinode
    from toolkit.render.bundle import render
    from toolkit.render.site import load_site

    the_plan = Plan.load(plan)
    the_plan.require_license_ok("deploy")  # render checks too; this names the command refused
    site = load_site(inventory)
    bundle = render(the_plan, site, out or Path("build") / the_plan.name, weights_source=weights, force=force)
    hosts = [h.name for h in site.hosts]
    report: dict = {"bundle": str(bundle.path)}
    groups = multinode.preview(bundle.vars.selfhost_multinode, bundle.vars.selfhost_fleet)  # which hosts form each multi-node replica
    if groups:
        report["groups"] = groups
        if not json:
            for line in groups:
                output.line(line)

    if check:  # read-only health check of what is deployed
        result = execute(output, operations.deploy_check(limit=limit), bundle.path, hosts, json).result
        finish(output, json, report | {"check": result.to_dict()}, result)
        return

    from toolkit.operate import releases

    invocation = runner.invocation(command_line(), site=str(inventory))  # host lock owner + audit
    # The preview is a check-mode run (it changes nothing): --dry-run shows it, then stops before `op`.
    preview = execute(output, operations.deploy_preview(limit=limit, invocation=invocation), bundle.path, hosts,
                      json, progress=False).result
    report["preview"] = preview.to_dict()
    if not json:
        output.deploy_preview(preview.changed_tasks, list(preview.hosts) or hosts)
    if not preview.ok:
        finish(output, json, report, preview)
    op = operations.deploy(limit=limit, invocation=invocation, verify_weights=verify_weights)
    if dry_run:
        return dry_run_done(output, json, report, [op], f"Bundle: {bundle.path}")
    confirm(output, f"Deploy {the_plan.name} to {len(preview.hosts) or len(hosts)} host(s)?", yes=yes,
            what="deploy", fix="pass --yes to deploy non-interactively (review with --dry-run first)")

    done = execute(output, op, bundle.path, hosts, json)
    result, keys = done.result, done.keys
    releases.append_audit(bundle.path, result, invocation=invocation, plan_digest=the_plan.digest())
    report["deploy"] = result.to_dict()
    if json:
        report["api_keys"] = keys  # shown once; not written anywhere on this machine
    else:
        output.api_keys(keys)
    finish(output, json, report, result)


def register(app: typer.Typer) -> None:
    from toolkit.commands import render, site

    site.register(app)
    render.register(app)
    app.command("deploy", epilog="Examples: " + "; ".join(EXAMPLES))(deploy)
