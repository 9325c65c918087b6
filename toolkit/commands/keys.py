"""`selfhost keys add|list|revoke -i SITE`: the gateway's API keys, each with a caller (team) label.

The gateway sends a key's label to the hybrid router as the caller (`X-Selfhost-Caller`), so the router's
`callers` policy (local_only, remote_allowed, models) applies per key. Without a router the label only
names the key (for `list` and `revoke`): plain nginx has no per-key model allow-list.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import typer

from toolkit.commands.lifecycle import (
    HostOpt,
    NameOpt,
    command_line,
    confirm,
    dry_run_done,
    execute,
    finish,
    ops_setup,
)
from toolkit.commands.options import DryRunOpt, InventoryOpt, JsonOpt, YesOpt

EXAMPLES = {
    "add": ["selfhost keys add -i sites/prod --label team-a", "selfhost keys add -i sites/prod --label legal --yes --json"],
    "list": ["selfhost keys list -i sites/prod", "selfhost keys list -i sites/prod --json"],
    "revoke": ["selfhost keys revoke -i sites/prod --label team-a", "selfhost keys revoke -i sites/prod --label team-a --yes"],
}
LabelOpt = Annotated[str, typer.Option("--label", help="Caller (team) label: letters, digits and ._:@/- "
                                                       "(the router's `callers` policy names it).")]
keys_app = typer.Typer(help="API keys with caller labels: add (shown once), list (never a key), revoke.",
                       no_args_is_help=True)


def _checked(label: str) -> str:
    from toolkit.errors import ConfigError
    from toolkit.render.router import LABEL_RE

    if not LABEL_RE.match(label) or label in ("0", "1"):
        raise ConfigError(f"--label {label!r}: letters, digits and ._:@/- only, at most 128 (not 0 or 1)",
                          fix="e.g. --label team-a")
    return label


def _setup(inventory, name, host):
    """Site, ops bundle, who runs this, deployment, the hosts the keys live on, and the fleet (one key set)."""
    from toolkit.operate import releases
    from toolkit.render.bundle import fleet_vars

    site, bundle, invocation, infos, dep = ops_setup(inventory, name, host, command_line())
    serving = releases.serving_hosts(infos, dep)  # multi-node replicas: only rank 0 has a gateway
    fv = fleet_vars(site, serving) if site is not None else None
    if fv and serving:
        bundle = releases.ops_bundle(site, bundle, serving=serving)
    fleet = [m.name for m in fv.members] if fv else None
    hosts = [host] if host else (fleet or serving or list(infos))
    return bundle, invocation, dep, hosts, fleet, serving


def add(inventory: InventoryOpt, label: LabelOpt, host: HostOpt = None, name: NameOpt = None, yes: YesOpt = False,
        dry_run: DryRunOpt = False, json: JsonOpt = False) -> None:
    """Issue a new API key with a caller label on every host (a fleet: one key for all); shown once.

    Existing keys keep working. The gateway reloads gracefully: no request fails.
    """
    from toolkit.commands import output
    from toolkit.operate import operations, releases

    _checked(label)
    bundle, invocation, dep, hosts, fleet, serving = _setup(inventory, name, host)
    tag = uuid.uuid4().hex[:12]
    op = operations.keys_add(name=dep, invocation=invocation, host=host, label=label, tag=tag, fleet=fleet,
                             serving=serving)
    if not json:
        output.line(f"add an API key labelled {label} to {dep} on {', '.join(hosts)}"
                    + (" (the fleet's one key set)" if fleet else ""))
    if dry_run:
        return dry_run_done(output, json, {"deployment": dep, "hosts": hosts, "label": label, "fleet": bool(fleet)}, [op])
    confirm(output, f"Add a key labelled {label} on {len(hosts)} host(s)?", yes=yes, what="add an API key",
            fix="pass --yes to add keys non-interactively")
    done = execute(output, op, bundle, hosts, json)
    keys = done.keys
    if fleet and keys:  # fetched from the first host; the same key works on every host of the fleet
        keys = dict.fromkeys(fleet, next(iter(keys.values())))
    releases.append_audit(bundle, done.result, invocation=invocation, plan_digest=None, name=dep)
    if not json:
        output.api_keys(keys)
    finish(output, json, {"deployment": dep, "label": label, "tag": tag, "add": done.result.to_dict(),
                          "api_keys": keys}, done.result)


def revoke(inventory: InventoryOpt, label: LabelOpt, host: HostOpt = None, name: NameOpt = None,
           yes: YesOpt = False, dry_run: DryRunOpt = False, json: JsonOpt = False) -> None:
    """Stop every API key with this label (refused when no key has it, or when no other key would be left)."""
    from toolkit.commands import output
    from toolkit.operate import operations, releases

    _checked(label)
    bundle, invocation, dep, hosts, fleet, serving = _setup(inventory, name, host)
    op = operations.keys_revoke(name=dep, invocation=invocation, host=host, label=label, fleet=fleet,
                                serving=serving)
    if not json:
        output.line(f"revoke every API key labelled {label} of {dep} on {', '.join(hosts)}")
    if dry_run:
        return dry_run_done(output, json, {"deployment": dep, "hosts": hosts, "label": label, "fleet": bool(fleet)}, [op])
    confirm(output, f"Revoke the keys labelled {label} on {len(hosts)} host(s)?", yes=yes, what="revoke API keys",
            fix="pass --yes to revoke keys non-interactively")
    done = execute(output, op, bundle, hosts, json)
    releases.append_audit(bundle, done.result, invocation=invocation, plan_digest=None, name=dep)
    finish(output, json, {"deployment": dep, "label": label, "revoke": done.result.to_dict()}, done.result)


def list_keys(inventory: InventoryOpt, host: HostOpt = None, name: NameOpt = None, json: JsonOpt = False) -> None:
    """Each host's key labels: how many keys, which `keys add`/`rotate-keys` runs added them. Never a key."""
    from toolkit.commands import output
    from toolkit.operate import operations

    bundle, invocation, dep, hosts, fleet, serving = _setup(inventory, name, host)
    op = operations.keys_list(name=dep, invocation=invocation, host=host, serving=serving)
    done = execute(output, op, bundle, hosts, json, progress=False)
    reports = done.reports
    if fleet and reports:  # the first host answers for the fleet's one key set
        reports = dict.fromkeys(fleet, next(iter(reports.values())))
    if json:
        output.as_json({"deployment": dep, "fleet": bool(fleet), "hosts": reports, "ok": done.result.ok})
    else:
        rows = [[h, label, str(v.get("keys")), "yes" if v.get("site_default") else "", ", ".join(v.get("tags") or [])]
                for h, r in reports.items() for label, v in sorted((r.get("labels") or {}).items())]
        output.table(f"API keys of {dep}" + (" (one key set for the fleet)" if fleet else ""),
                     ["host", "label", "keys", "site default (1)", "added by"], rows)
    done.result.raise_for_status()


def register(app: typer.Typer) -> None:
    keys_app.command("add", epilog="Examples: " + "; ".join(EXAMPLES["add"]))(add)
    keys_app.command("list", epilog="Examples: " + "; ".join(EXAMPLES["list"]))(list_keys)
    keys_app.command("revoke", epilog="Examples: " + "; ".join(EXAMPLES["revoke"]))(revoke)
    app.add_typer(keys_app, name="keys")
