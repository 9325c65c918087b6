"""Mutating day-2 commands: `upgrade`, `rollback`, `rotate-keys`, `destroy`, `unlock` (one module each).

They and `deploy` share: the confirm/--yes/--dry-run rule, the command line recorded in the host lock and
the audit log, the live progress view and the final summary; the day-2 ones also share the ops bundle
for commands that take no plan. Each command builds its runs as values (`toolkit.operate.operations`):
`--dry-run` prints them (`dry_run_done`), `execute` runs one.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

NameOpt = Annotated[Optional[str], typer.Option("--name", help="Deployment name (default: the one the hosts keep).")]
HostOpt = Annotated[Optional[str], typer.Option("--host", help="Only this host (inventory name).")]


def command_line() -> str:
    return "selfhost " + shlex.join(sys.argv[1:])


def confirm(output, question: str, *, yes: bool, fix: str, what: str) -> None:
    """Ask (or refuse without a terminal) unless --yes; a 'no' ends the command with exit 1, nothing changed."""
    from toolkit.operate import releases as ops

    if yes:
        return
    if not sys.stdin.isatty():
        ops.require_confirmation(what, fix)
    if not output.confirm(question):
        from toolkit.errors import EXIT_NO

        output.line("aborted: nothing changed")
        raise typer.Exit(EXIT_NO)


def execute(output, op, bundle: Path, hosts: list[str], json: bool, *, progress: bool = True):
    """Run one Operation (`operations.execute`), with the live host x step grid on a terminal."""
    from toolkit.operate import operations

    if not progress or json or not sys.stdout.isatty():
        return operations.execute(bundle, op)
    with output.DeployProgress(hosts, list(op.steps), title=op.title) as view:
        return operations.execute(bundle, op, on_event=view.update)


def dry_run_done(output, json: bool, report: dict, steps: list, where: str = "") -> None:
    """End a --dry-run: the JSON document with the runs it would make (`operations`), or those runs and
    one line saying nothing changed (and where to look)."""
    from toolkit.operate import operations

    if json:
        output.as_json(report | {"operations": operations.describe(steps)})
        return
    output.operations(steps)
    output.line("dry run: nothing changed" + (f". {where}" if where else ""))


def finish(output, json: bool, report: dict, result) -> None:
    """Print the summary (or the JSON document) and turn a failed run into its error/exit code."""
    if json:
        output.as_json(report)
    else:
        output.deploy_summary(result)
    result.raise_for_status()


def ops_setup(inventory: Path, name: Optional[str], host: Optional[str], command: str):
    """Site, ops bundle, invocation record (who runs this), the hosts' releases and the deployment name,
    for plan-less commands."""
    from toolkit.deploy import runner
    from toolkit.operate import releases as ops
    from toolkit.render.site import load_site

    site = load_site(inventory)
    bundle = ops.ops_bundle(site, Path("build") / f"ops-{site.path.absolute().name}")
    invocation = runner.invocation(command, site=str(inventory))
    infos = ops.read_releases(bundle, invocation=invocation, name=name, limit=host)
    resolved = ops.resolve_name(infos, name)
    return site, bundle, invocation, infos, resolved


def register(app: typer.Typer) -> None:
    from toolkit.commands import destroy, keys, rollback, rotate_keys, unlock, upgrade

    for module in (upgrade, rollback, rotate_keys, keys, destroy, unlock):
        module.register(app)
