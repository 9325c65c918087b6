"""`selfhost rotate-keys -i SITE`: new API keys without downtime (old keys work for --grace seconds)."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

import typer

from toolkit.commands.lifecycle import HostOpt, NameOpt, command_line, confirm, dry_run_done, execute, finish, ops_setup
from toolkit.commands.options import DryRunOpt, InventoryOpt, JsonOpt, YesOpt

EXAMPLES = [
    "selfhost rotate-keys -i sites/prod",
    "selfhost rotate-keys -i sites/prod --grace 600 --yes",
    "selfhost rotate-keys -i sites/prod --host gpu-01 --grace 0 --yes --json",
]
GraceOpt = Annotated[int, typer.Option("--grace", min=0, help="Seconds the old keys keep working after the new ones are shown.")]


def rotate_keys(inventory: InventoryOpt, host: HostOpt = None, name: NameOpt = None, grace: GraceOpt = 300,
                yes: YesOpt = False, dry_run: DryRunOpt = False, json: JsonOpt = False) -> None:
    """New API keys without downtime; the old ones work for --grace seconds more.

    Adds a fresh key per host and caller label (`selfhost keys`) beside the old ones (nginx reloads
    gracefully: no request fails), shows them once, waits --grace seconds for clients to switch, then removes the old keys and reloads again.
    A fleet (site `selfhost_fleet: true`) has one key set: each step runs on every host together, and
    --host is refused.
    """
    from toolkit.commands import output
    from toolkit.operate import operations, releases
    from toolkit.render.bundle import fleet_vars

    site, bundle, invocation, infos, dep = ops_setup(inventory, name, host, command_line())
    # Multi-node replicas: only rank 0 of each group has a gateway (its keys); the hosts' records say which.
    serving = releases.serving_hosts(infos, dep)
    # A fleet (site `selfhost_fleet: true`) shares one key set: it rotates on every host together (the ops
    # bundle carries the same fleet value, so the gateway role rotates on the first host and copies).
    fv = fleet_vars(site, serving) if site is not None else None
    if fv and serving:  # the site alone cannot tell the groups' rank 0: the ops bundle learns them here
        bundle = releases.ops_bundle(site, bundle, serving=serving)
    fleet = [m.name for m in fv.members] if fv else None
    hosts = fleet or serving or list(infos)
    rotation = uuid.uuid4().hex[:12]
    add, wait, retire = operations.rotate_keys(name=dep, invocation=invocation, host=host, grace_s=grace,
                                               rotation=rotation, fleet=fleet, serving=serving)
    if not json:
        what = "the fleet's one key set" if fleet else "the API keys"
        output.line(f"rotate {what} of {dep} on {', '.join(hosts)}; old keys keep working for {grace}s")
    if dry_run:
        return dry_run_done(output, json, {"deployment": dep, "hosts": hosts, "grace_s": grace, "fleet": bool(fleet)},
                            [add, wait, retire])
    confirm(output, f"Rotate the API keys on {len(hosts)} host(s)?", yes=yes, what="rotate keys",
            fix="pass --yes to rotate non-interactively")
    done = execute(output, add, bundle, hosts, json)
    added, keys, labelled = done.result, done.keys, done.labelled_keys
    if fleet and keys:  # fetched from the first host; the same key works on every host of the fleet
        keys = dict.fromkeys(fleet, next(iter(keys.values())))
        labelled = dict.fromkeys(fleet, next(iter(labelled.values()), {}))
    # Each caller label gets its own new key (`selfhost keys add --label`); api_keys: the first per host.
    report: dict = {"deployment": dep, "rotation": rotation, "add": added.to_dict(), "labelled_keys": labelled}
    if not added.ok:
        releases.append_audit(bundle, added, invocation=invocation, plan_digest=None, name=dep)
        finish(output, json, report | {"api_keys": keys}, added)
    if not json:
        output.api_keys({f"{h} [{label}]": k for h, by in labelled.items() for label, k in by.items()} or keys)
        output.line(f"old keys keep working for {wait.seconds}s; switch your clients now")
    time.sleep(wait.seconds)
    retired = execute(output, retire, bundle, hosts, json).result
    for h, s in retired.hosts.items():  # one audit line for the whole rotation
        s.changed += added.hosts.get(h, s).changed if h in added.hosts else 0
    releases.append_audit(bundle, retired, invocation=invocation, plan_digest=None, name=dep)
    report["retire"] = retired.to_dict()
    finish(output, json, report | {"api_keys": keys}, retired)




def register(app: typer.Typer) -> None:
    app.command("rotate-keys", epilog="Examples: " + "; ".join(EXAMPLES))(rotate_keys)
