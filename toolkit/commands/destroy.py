"""`selfhost destroy -i SITE`: stop and remove the deployment's containers, networks and boot unit."""

from __future__ import annotations

from typing import Annotated

import typer

from toolkit.commands.lifecycle import HostOpt, NameOpt, command_line, confirm, dry_run_done, execute, finish, ops_setup
from toolkit.commands.options import DryRunOpt, InventoryOpt, JsonOpt, YesOpt

EXAMPLES = [
    "selfhost destroy -i sites/prod --dry-run",
    "selfhost destroy -i sites/prod --yes",
    "selfhost destroy -i sites/prod --purge --yes",
]
PurgeOpt = Annotated[bool, typer.Option("--purge", help="Also delete weights, images, releases and API keys (the audit log stays).")]


def destroy(inventory: InventoryOpt, host: HostOpt = None, name: NameOpt = None, purge: PurgeOpt = False,
            yes: YesOpt = False, dry_run: DryRunOpt = False, json: JsonOpt = False) -> None:
    """Stop and remove the containers, networks and systemd unit.

    Weights, images, releases and API keys stay (a later `selfhost deploy` or `rollback` brings the
    service back) unless --purge.
    """
    from toolkit.commands import output
    from toolkit.operate import operations
    from toolkit.operate import releases as ops

    site, bundle, invocation, infos, dep = ops_setup(inventory, name, host, command_line())
    hosts = list(infos)
    gone = "containers, networks, boot unit" + (", weights, images, releases, API keys and TLS files" if purge else "")
    kept = "the audit log" if purge else "weights, images, releases, API keys (deploy or rollback restores service)"
    report = {"deployment": dep, "hosts": hosts, "purge": purge, "removes": gone, "keeps": kept}
    if not json:
        output.table(f"destroy {dep}", ["hosts", "removes", "keeps"], [[", ".join(hosts), gone, kept]])
    op = operations.destroy(name=dep, invocation=invocation, host=host, purge=purge)
    if dry_run:
        return dry_run_done(output, json, report, [op])
    confirm(output, f"Destroy {dep} on {len(hosts)} host(s){' and PURGE its data' if purge else ''}?", yes=yes,
            what="destroy", fix="pass --yes to destroy non-interactively (review with --dry-run first)")
    result = execute(output, op, bundle, hosts, json).result
    ops.append_audit(bundle, result, invocation=invocation, plan_digest=None, name=dep)
    finish(output, json, report | {"destroy": result.to_dict()}, result)


def register(app: typer.Typer) -> None:
    app.command("destroy", epilog="Examples: " + "; ".join(EXAMPLES))(destroy)
