"""`selfhost doctor -i SITE PLAN|--bundle DIR`: every preflight check plus the running deployment's health.

Read-only (the playbook runs in check mode). `--json` prints the stable contract
`{"ok": bool, "checks": [{"host", "name", "ok", "detail", "remedy"}]}`. Exit codes: 0 all checks
passed, 1 a check failed, 2 doctor could not run (unreachable host, bad bundle or site).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.commands.options import InventoryOpt, JsonOpt

EXAMPLES = [
    "selfhost doctor -i sites/prod",
    "selfhost doctor -i sites/prod plan.yml",
    "selfhost doctor -i sites/prod --bundle build/llama-8b --json",
    "selfhost doctor -i sites/prod plan.yml --host gpu-02",
]

PlanOptArg = Annotated[Optional[Path], typer.Argument(help="plan.yml (its bundle, or rendered into build/<plan name>); default: what SITE last rendered/deployed.")]
BundleOpt = Annotated[Optional[Path], typer.Option("--bundle", help="A rendered bundle folder instead of PLAN (default: what SITE last rendered/deployed).")]
HostOpt = Annotated[Optional[str], typer.Option("--host", help="Only this inventory host.")]


def doctor(inventory: InventoryOpt, plan: PlanOptArg = None, bundle: BundleOpt = None, host: HostOpt = None,
           json: JsonOpt = False) -> None:
    """Check the hosts (OS, memory, disk, port, GPUs) and the deployment (containers, gateway, certificate); change nothing."""
    from toolkit.commands import output
    from toolkit.deploy import locate
    from toolkit.operate import doctor as doc
    from toolkit.errors import SelfhostError

    try:
        ref = locate.resolve(inventory, plan, bundle)
        report = doc.gather(ref.path, ref.hosts, limit=locate.limit_for(ref, host))
    except SelfhostError as exc:
        err = doc.DoctorCouldNotRun(exc.message, fix=exc.fix, hint=exc.hint)
        if json:
            output.as_json({"ok": False, "checks": [], "error": err.to_dict()})
        raise err from None
    if json:
        output.as_json(report.to_dict())
    else:
        output.doctor_report(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    app.command("doctor", epilog="Examples: " + "; ".join(EXAMPLES))(doctor)
