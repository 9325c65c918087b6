"""`selfhost route audit -i SITE [--days 30] [--json] [--log FILE]`: verify the router's hash-chained audit log.

Each host's log (`<selfhost_root>/<name>/router/audit.jsonl`, the router role's contract; playbooks/
route_audit.yml copies it to a private scratch folder) is checked with `router.audit.verify`, the one
module of the router the toolkit imports (stdlib only). `--log FILE` verifies a local copy instead.
Exit 1 when a chain is broken or a log is missing; 2 when a host could not be read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.commands.doctor import BundleOpt, HostOpt, PlanOptArg
from toolkit.commands.options import JsonOpt

EXAMPLES = [
    "selfhost route audit -i sites/prod",
    "selfhost route audit -i sites/prod --days 7 --json",
    "selfhost route audit --log copy-of-audit.jsonl",
]
AUDIT_LOG = "{root}/{name}/router/audit.jsonl"
"""Where the router writes its audit log on a host (playbooks/route_audit.yml holds the same default)."""

DaysOpt = Annotated[int, typer.Option("--days", min=1, max=3650, help="Summarise the last N days (the whole chain is always verified).")]
LogOpt = Annotated[Optional[Path], typer.Option("--log", help="Verify this local copy of an audit log instead of the hosts'.")]
SiteOpt = Annotated[Optional[Path], typer.Option("--inventory", "-i", help="Site folder (from `selfhost init`).")]

route_app = typer.Typer(help="The hybrid router: verify its audit log.", no_args_is_help=True)


def verify_logs(logs: dict[str, Path], days: int) -> dict[str, dict]:
    """host (or file) → the report as a dict (ok, records, summary, …)."""
    from dataclasses import asdict

    from router.audit import verify

    out = {}
    for where, path in logs.items():
        rep = verify(path, days=days)
        out[where] = {**asdict(rep), "summary": rep.summary}
    return out


def audit(inventory: SiteOpt = None, plan: PlanOptArg = None, bundle: BundleOpt = None, host: HostOpt = None,
          days: DaysOpt = 30, log: LogOpt = None, json: JsonOpt = False) -> None:
    """Verify each host's router audit chain and print its summary; exit 1 when a chain is broken."""
    from toolkit.commands import output
    from toolkit.errors import EXIT_HOSTS, EXIT_NO, ConfigError

    errors: dict[str, str] = {}
    if log is not None:
        reports = verify_logs({str(log): log}, days)
    else:
        if inventory is None:
            raise ConfigError("route audit needs -i SITE (the hosts' logs) or --log FILE (a local copy)")
        reports, errors = _from_hosts(inventory, plan, bundle, host, days)
    if json:
        output.as_json({"reports": reports, "errors": errors})
    else:
        for where, rep in reports.items():
            output.line(f"{where}: {rep['summary']}", style=None if rep["ok"] else "red")
        for where, why in errors.items():
            output.line(f"{where}: {why}", style="red")
    if any(not r["ok"] for r in reports.values()):
        raise typer.Exit(EXIT_NO)
    if errors:
        raise typer.Exit(EXIT_HOSTS)


def _from_hosts(site_dir: Path, plan, bundle, host, days: int) -> tuple[dict[str, dict], dict[str, str]]:
    from toolkit.deploy import locate

    ref = locate.resolve(site_dir, plan, bundle)
    return fetch_reports(ref.path, ref.hosts, days, limit=locate.limit_for(ref, host))


def fetch_reports(bundle: Path, hosts: list[str], days: int, *, limit: str | None = None
                  ) -> tuple[dict[str, dict], dict[str, str]]:
    """Copy each host's audit log (playbooks/route_audit.yml) to a private scratch folder and verify it there."""
    from toolkit.deploy import readout, runner

    fact = readout.Fact(playbook="route_audit.yml", var="_selfhost_route_audit", kind=dict,
                        nothing="route_audit reported nothing")
    with runner.scratch_dir("selfhost-route-audit-") as tmp:
        answers = readout.gather(bundle, fact, hosts, limit=limit,
                                 extravars={"selfhost_route_audit_dest": str(tmp)})
        logs, errors = {}, {}
        for h, raw in answers.items():
            if isinstance(raw, (readout.Unreachable, readout.NoReport)):
                errors[h] = f"unreachable: {raw.why}" if isinstance(raw, readout.Unreachable) else raw.why
            elif str(raw.get("exists")).lower() != "true":
                errors[h] = f"no audit log at {raw.get('path')} (is the router deployed?)"
            else:
                logs[h] = tmp / f"{h}.jsonl"
        return verify_logs(logs, days), errors


def register(app: typer.Typer) -> None:
    route_app.command("audit", epilog="Examples: " + "; ".join(EXAMPLES))(audit)
    app.add_typer(route_app, name="route")
