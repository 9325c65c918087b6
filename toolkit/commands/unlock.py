"""`selfhost unlock -i SITE --host HOST`: remove a host lock left by a run that died."""

from __future__ import annotations

from typing import Annotated

import typer

from toolkit.commands.lifecycle import NameOpt, command_line, execute, ops_setup
from toolkit.commands.lifecycle import dry_run_done
from toolkit.commands.options import DryRunOpt, InventoryOpt, JsonOpt

EXAMPLES = ["selfhost unlock -i sites/prod --host gpu-01"]
RequiredHostOpt = Annotated[str, typer.Option("--host", help="The locked host (inventory name).")]


def unlock(inventory: InventoryOpt, host: RequiredHostOpt, name: NameOpt = None, dry_run: DryRunOpt = False,
           json: JsonOpt = False) -> None:
    """Remove HOST's lock left by a run that died, and say whose it was."""
    from toolkit.commands import output
    from toolkit.deploy import runner
    from toolkit.operate import operations, releases

    site, bundle, invocation, infos, dep = ops_setup(inventory, name, host, command_line())
    lock = (infos.get(host, {}).get(dep) or {}).get("lock")
    op = operations.unlock(name=dep, invocation=invocation, host=host)
    if dry_run:
        return dry_run_done(output, json, {"host": host, "deployment": dep, "lock": lock}, [op])
    result = execute(output, op, bundle, [host], json, progress=False).result
    releases.append_audit(bundle, result, invocation=invocation, plan_digest=None, name=dep)
    if json:
        output.as_json({"host": host, "deployment": dep, "removed_lock": lock, "unlock": result.to_dict()})
    elif lock:  # the record comes from the host: no escape sequences reach the terminal
        who, since, cmd = (runner.plain(str(lock.get(k))) for k in ("who", "since", "command"))
        output.line(f"{host}: removed the lock of {who} (since {since}, running {cmd})")
    else:
        output.line(f"{host}: was not locked")
    result.raise_for_status()


def register(app: typer.Typer) -> None:
    app.command("unlock", epilog="Examples: " + "; ".join(EXAMPLES))(unlock)
