"""`selfhost logs -i SITE PLAN|--bundle DIR`: the inference server's (or gateway's) log from the hosts.

Read-only: `docker logs` on each host over SSH. `--follow` polls every ~2 s with `--since` the
newest line seen, until Ctrl-C. API keys never reach the output: `Bearer …` values and key-like
assignments are masked.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from toolkit.commands.doctor import BundleOpt, HostOpt, PlanOptArg
from toolkit.commands.options import InventoryOpt, JsonOpt

EXAMPLES = [
    "selfhost logs -i sites/prod --tail 50",
    "selfhost logs -i sites/prod plan.yml --host gpu-01 --since 10m --follow",
    "selfhost logs -i sites/prod --bundle build/llama-8b --service gateway --json",
]

ServiceOpt = Annotated[str, typer.Option("--service", help="Which container: vllm (the server) or gateway.")]
SinceOpt = Annotated[Optional[str], typer.Option("--since", help="Only lines newer than this (10m, 1h, or an RFC 3339 time).")]
TailOpt = Annotated[int, typer.Option("--tail", "-n", min=0, help="At most this many lines per host from the end.")]
FollowOpt = Annotated[bool, typer.Option("--follow", "-f", help="Keep polling for new lines (every ~2 s) until Ctrl-C.")]
TimestampsOpt = Annotated[bool, typer.Option("--timestamps", "-t", help="Show Docker's timestamp on each line.")]
PollsOpt = Annotated[Optional[int], typer.Option("--max-polls", hidden=True, min=1, help="Stop --follow after N polls (tests).")]


def logs(inventory: InventoryOpt, plan: PlanOptArg = None, bundle: BundleOpt = None, host: HostOpt = None,
         service: ServiceOpt = "vllm", since: SinceOpt = None, tail: TailOpt = 100, follow: FollowOpt = False,
         timestamps: TimestampsOpt = False, max_polls: PollsOpt = None, json: JsonOpt = False) -> None:
    """Print the last lines of the server (or gateway) log of every host, or of --host; --follow keeps polling."""
    from toolkit.commands import output
    from toolkit.deploy import locate
    from toolkit.operate import logs as lg
    from toolkit.errors import ConfigError

    if service not in lg.SERVICES:
        raise ConfigError(f"--service {service}: expected one of {', '.join(lg.SERVICES)}")
    ref = locate.resolve(inventory, plan, bundle)
    limit = locate.limit_for(ref, host)
    show_host = limit is None and len(ref.hosts) > 1
    if not follow:
        lines, errors = lg.fetch(ref.path, ref.hosts, service=service, since=since, tail=tail, limit=limit)
        if json:
            output.as_json({"lines": [ln.to_dict() for ln in lines], "errors": errors})
        else:
            output.log_lines(lines, show_host=show_host, timestamps=timestamps)
            output.log_errors(errors)
        if errors:
            from toolkit.errors import EXIT_HOSTS

            raise typer.Exit(EXIT_HOSTS)
        return

    polls = {"n": 0}
    shown_errors: dict[str, str] = {}

    def read(cursor):
        polls["n"] += 1
        return lg.fetch(ref.path, ref.hosts, service=service, since=cursor,
                        tail=tail if polls["n"] == 1 else "all", limit=limit)

    def emit(lines, errors):
        if json:
            for ln in lines:
                output.as_json_line(ln.to_dict())
        else:
            output.log_lines(lines, show_host=show_host, timestamps=timestamps)
        fresh = {h: e for h, e in errors.items() if shown_errors.get(h) != e}
        shown_errors.update(fresh)
        output.log_errors(fresh)

    try:
        lg.follow(read, emit, since=since, max_polls=max_polls)
    except KeyboardInterrupt:
        return


def register(app: typer.Typer) -> None:
    app.command("logs", epilog="Examples: " + "; ".join(EXAMPLES))(logs)
