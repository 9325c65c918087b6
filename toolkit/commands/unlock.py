"""`selfhost unlock -i SITE --host HOST`: remove a host lock left by a run that died."""

from __future__ import annotations

from typing import Annotated

import typer

from toolkit.commands.lifecycle import NameOpt, command_line, ops_setup
from toolkit.commands.options import InventoryOpt, JsonOpt

EXAMPLES = ["selfhost unlock -i sites/prod --host gpu-01"]
RequiredHostOpt = Annotated[str, typer.Option("--host", help="The locked host (inventory name).")]


def unlock(inventory: InventoryOpt, host: RequiredHostOpt, name: NameOpt = None, json: JsonOpt = False) -> None:
    """Remove HOST's lock left by a run that died, and say whose it was."""
    from toolkit.commands import output
    from toolkit.deploy import runner
    from toolkit.operate import releases

    site, bundle, run_rec, infos, dep = ops_setup(inventory, name, host, command_line())
    lock = (infos.get(host, {}).get(dep) or {}).get("lock")
    result = runner.run(bundle, playbook="unlock.yml", limit=host,
                          extravars={"selfhost_run": run_rec, "selfhost_name": dep})
    releases.append_audit(bundle, result, run=run_rec, plan_digest=None, name=dep)
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
