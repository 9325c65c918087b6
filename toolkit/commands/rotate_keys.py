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

    Adds a fresh key per host beside the old ones (nginx reloads gracefully: no request fails), shows
    it once, waits --grace seconds for clients to switch, then removes the old keys and reloads again.
    """
    from toolkit.commands import output
    from toolkit.errors import ConfigError
    from toolkit.operate import operations, releases

    site, bundle, invocation, infos, dep = ops_setup(inventory, name, host, command_line())
    if site is not None and site.settings.selfhost_fleet:
        # The day-2 ops bundle carries no plan vars, so the fleet's one key set cannot be rotated from it yet:
        # refuse rather than give each host a key of its own.
        raise ConfigError(f"{inventory}: rotate-keys does not handle a fleet (selfhost_fleet: true) yet",
                          fix="rotate by re-deploying: delete api-keys.conf on the first host, then "
                              "`selfhost deploy PLAN -i SITE` creates and installs one new key set")
    hosts = list(infos)
    if not json:
        output.line(f"rotate the API keys of {dep} on {', '.join(hosts)}; old keys keep working for {grace}s")
    rotation = uuid.uuid4().hex[:12]
    add, wait, retire = operations.rotate_keys(name=dep, invocation=invocation, host=host, grace_s=grace,
                                               rotation=rotation)
    if dry_run:
        return dry_run_done(output, json, {"deployment": dep, "hosts": hosts, "grace_s": grace}, [add, wait, retire])
    confirm(output, f"Rotate the API keys on {len(hosts)} host(s)?", yes=yes, what="rotate keys",
            fix="pass --yes to rotate non-interactively")
    done = execute(output, add, bundle, hosts, json)
    added, keys = done.result, done.keys
    report: dict = {"deployment": dep, "rotation": rotation, "add": added.to_dict()}
    if not added.ok:
        releases.append_audit(bundle, added, invocation=invocation, plan_digest=None, name=dep)
        finish(output, json, report | {"api_keys": keys}, added)
    if not json:
        output.api_keys(keys)
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
