"""`selfhost upgrade PLAN -i SITE`: show what changes on each host, then roll it out one host at a time."""

from __future__ import annotations

from pathlib import Path

import typer

from toolkit.commands.deploy import WeightsOpt
from toolkit.commands.lifecycle import command_line, confirm, dry_run_done, execute
from toolkit.commands.options import DryRunOpt, InventoryOpt, JsonOpt, PlanArg, YesOpt

EXAMPLES = [
    "selfhost upgrade plan.yml -i sites/prod --dry-run",
    "selfhost upgrade plan.yml -i sites/prod",
    "selfhost upgrade plan.yml -i sites/prod --yes --json",
]


def upgrade(plan: PlanArg, inventory: InventoryOpt, yes: YesOpt = False, dry_run: DryRunOpt = False,
            json: JsonOpt = False, weights: WeightsOpt = None) -> None:
    """Upgrade to PLAN one host at a time, rolling a failing host back by itself.

    Shows the diff against what each host runs (image, model, every vLLM flag), asks, then rolls out:
    each host must pass verify before the next starts; a host that fails goes back to its previous
    release and the rollout stops there (exit 2). Multi-node replicas roll group by group (a group's hosts
    together); with a fleet, the other replicas keep the endpoint serving meanwhile.
    """
    from toolkit.commands import output
    from toolkit.deploy import runner
    from toolkit.operate import operations, releases
    from toolkit.errors import DeployError
    from toolkit.plan.model import Plan
    from toolkit.render.bundle import render
    from toolkit.render.site import load_site

    the_plan = Plan.load(plan)
    site = load_site(inventory)
    bundle = render(the_plan, site, Path("build") / the_plan.name, weights_source=weights)
    invocation = runner.invocation(command_line(), site=str(inventory))
    infos = releases.read_releases(bundle.path, invocation=invocation, name=the_plan.name)
    new = releases.expected_release(bundle.vars)
    hosts = [h.name for h in site.hosts]
    # Multi-node: each host is compared with its own rank's record; a group is the unit of the rollout.
    diffs = {h: releases.release_diff((infos.get(h, {}).get(the_plan.name) or {}).get("current"),
                                      releases.expected_release(bundle.vars, h)) for h in hosts}
    mn = bundle.vars.selfhost_multinode
    unit = f"one replica ({len(mn.groups[0].members)} hosts) at a time" if mn else "one at a time"
    report: dict = {"bundle": str(bundle.path), "plan_digest": new["plan_digest"],
                    "diff": {h: [c.__dict__ for c in d] for h, d in diffs.items()}}
    if not json:
        output.release_diffs(diffs)
    op = operations.upgrade(invocation=invocation)
    if dry_run:
        return dry_run_done(output, json, report, [op], f"Bundle: {bundle.path}")
    confirm(output, f"Upgrade {the_plan.name} on {len(hosts)} host(s), {unit}?", yes=yes, what="upgrade",
            fix="pass --yes to upgrade non-interactively (review with --dry-run first)")

    done = execute(output, op, bundle.path, hosts, json)
    result, keys = done.result, done.keys
    audit = releases.append_audit(bundle.path, result, invocation=invocation, plan_digest=new["plan_digest"])
    report["upgrade"] = result.to_dict()
    report["audit_ok"] = audit.ok if audit else None
    if json:
        report["api_keys"] = keys
        output.as_json(report)
    else:
        output.deploy_summary(result)
        output.api_keys(keys)
        if audit is not None and not audit.ok:
            output.warn("the audit line could not be appended on every host: " + "; ".join(
                f"{f.host}: {f.message}" for f in audit.failed))
    stop = releases.stop_message(result)
    if stop and not any(f.step == "lock" for f in result.failed):
        raise DeployError(f"upgrade stopped: {stop}",
                          fix="fix what the message names (flags the new vLLM rejects, a model that does not fit), "
                              "then run `selfhost upgrade` again; upgraded hosts keep the new release",
                          hint=f"ansible-runner artifacts: {result.artifacts}")
    result.raise_for_status()


def register(app: typer.Typer) -> None:
    app.command("upgrade", epilog="Examples: " + "; ".join(EXAMPLES))(upgrade)
