"""`selfhost status -i SITE PLAN|--bundle DIR`: what each host serves now, with live vLLM metrics.

Read-only. Per host: server container state and health, image, served model and revision, uptime,
restarts, the gateway, GPU memory (GPU hosts), and from `/metrics` (two samples a few seconds
apart) running/waiting requests, KV-cache use, token totals and tokens/s, errors. Exit codes: 0
every host serving (running and healthy), 1 a host is not, 2 a host could not be read.
"""

from __future__ import annotations

from typing import Annotated

import typer

from toolkit.commands.doctor import BundleOpt, HostOpt, PlanOptArg
from toolkit.commands.options import InventoryOpt, JsonOpt

EXAMPLES = [
    "selfhost status -i sites/prod",
    "selfhost status -i sites/prod plan.yml",
    "selfhost status -i sites/prod --bundle build/llama-8b --json",
    "selfhost status -i sites/prod plan.yml --host gpu-01 --sample 10",
]

SampleOpt = Annotated[float, typer.Option("--sample", min=0.5, max=60, help="Seconds between the two /metrics samples (tokens/s).")]


def status(inventory: InventoryOpt, plan: PlanOptArg = None, bundle: BundleOpt = None, host: HostOpt = None,
           sample: SampleOpt = 3.0, json: JsonOpt = False) -> None:
    """Show each host's server, model, uptime, GPUs and live load (requests, KV cache, tokens/s, errors)."""
    from toolkit.commands import output
    from toolkit.deploy import locate
    from toolkit.errors import EXIT_HOSTS, EXIT_NO
    from toolkit.operate import status as st

    ref = locate.resolve(inventory, plan, bundle)
    statuses = st.gather(ref.path, ref.hosts, limit=locate.limit_for(ref, host), sample_s=sample)
    ok = all(s.ok for s in statuses)
    # A multi-node group is one replica of the fleet: its rank 0 serves, its other ranks must be healthy too.
    fleet = st.fleet_view(statuses, st.replica_groups(ref.path)) if st.is_fleet(ref.path) else None
    if json:
        output.as_json({"ok": ok, "hosts": [s.to_dict() for s in statuses],
                        **({"fleet": fleet.to_dict()} if fleet else {})})
    else:
        output.status_report(statuses)
        if fleet:
            output.fleet_report(fleet)
    if any(not s.reachable for s in statuses):
        raise typer.Exit(EXIT_HOSTS)
    if not ok:
        raise typer.Exit(EXIT_NO)


def register(app: typer.Typer) -> None:
    app.command("status", epilog="Examples: " + "; ".join(EXAMPLES))(status)
