"""`selfhost rollback -i SITE`: put hosts back on a release they keep, offline, one host at a time (a multi-node
replica: all its ranks together)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from toolkit.commands.lifecycle import HostOpt, NameOpt, command_line, confirm, dry_run_done, execute, finish, ops_setup
from toolkit.commands.options import DryRunOpt, InventoryOpt, JsonOpt, YesOpt

EXAMPLES = [
    "selfhost rollback -i sites/prod --dry-run",
    "selfhost rollback -i sites/prod --host gpu-01 --yes",
    "selfhost rollback -i sites/prod --to 3f2a9c01 --yes",
]
ToOpt = Annotated[Optional[str], typer.Option("--to", help="Release to go back to (release id or plan digest, or their first characters); default: the previous one.")]


def rollback(inventory: InventoryOpt, host: HostOpt = None, to: ToOpt = None, name: NameOpt = None,
             yes: YesOpt = False, dry_run: DryRunOpt = False, json: JsonOpt = False) -> None:
    """Go back to the previous release (or --to RELEASE), offline, one host (or multi-node replica) at a time.

    Uses only what each host keeps (image, weights, exact argv/env); every host is verified.
    """
    from toolkit.commands import output
    from toolkit.operate import operations
    from toolkit.operate import releases as ops

    site, bundle, invocation, infos, dep = ops_setup(inventory, name, host, command_line())
    rows, report = [], {"deployment": dep, "hosts": {}}
    for h, info in infos.items():
        kept = info.get(dep) or {}
        cur = (kept.get("current") or {}).get("release")
        records = {k: v for k, v in (kept.get("records") or {}).items() if v}
        target = ops.rollback_target(kept, to)  # chosen once: the playbook gets this value, not `to`
        label = f"{target} (plan {records[target]['plan_digest']})" if target in records else "(none kept)"
        rows.append([h, cur or "-", label, ", ".join(records)])
        report["hosts"][h] = {"current": cur, "target": target, "kept": sorted(records)}
    targets = {h: r["target"] for h, r in report["hosts"].items()}
    # Multi-node replicas roll back as units (refuses --host naming part of one, with the fix).
    groups, serial = ops.rollback_groups(infos, dep, targets, [h.name for h in site.hosts] if site else list(infos))
    if groups:
        report["groups"] = _group_lines(groups)
    if not json:
        output.table(f"rollback {dep}", ["host", "current", "roll back to", "releases kept"], rows)
        for line in report.get("groups", []):
            output.line(line)
    op = operations.rollback(name=dep, invocation=invocation, host=host, to=to, targets=targets,
                             groups=groups, serial=serial)
    if dry_run:
        return dry_run_done(output, json, report, [op])
    confirm(output, f"Roll {dep} back on {len(rows)} host(s), " + ("one replica at a time?" if groups
            else "one at a time?"), yes=yes, what="roll back",
            fix="pass --yes to roll back non-interactively (review with --dry-run first)")
    result = execute(output, op, bundle, list(infos), json).result
    ops.append_audit(bundle, result, invocation=invocation, plan_digest=None, name=dep)
    finish(output, json, report | {"rollback": result.to_dict()}, result)


def _group_lines(groups: dict[str, dict]) -> list[str]:
    """One line per replica: its ranks and what the rollback does to them together."""
    firsts = sorted((n["group"], n["members"]) for n in groups.values() if n["rank"] == 0)
    return [f"replica {g}: " + ", ".join(f"{m} (rank {r})" for r, m in enumerate(members))
            + f" roll back together: every rank stops, each starts its own release, then {members[0]} (rank 0)"
              " must be healthy and verified" for g, members in firsts]


def register(app: typer.Typer) -> None:
    app.command("rollback", epilog="Examples: " + "; ".join(EXAMPLES))(rollback)
