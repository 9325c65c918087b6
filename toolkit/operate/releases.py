"""Day-2 writes (upgrade, rollback, rotate-keys, destroy, unlock): the pure parts and the small runs they share.

Every mutating command goes through the same shape: read what the hosts keep (`read_releases`,
releases.yml), decide and show (`release_diff`), then run one playbook of a bundle under the host
lock and append one audit line per host (`append_audit`, audit.yml). Commands without a plan run an
*ops bundle* (`ops_bundle`): the site's inventory and the packaged playbooks, no plan vars: the hosts'
release records say what runs there. Nothing here prints.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.deploy import runner
from toolkit.operate import operations
from toolkit.plan.vllm_args import argv_flags
from toolkit.render import server
from toolkit.render.multinode import NODE_RANK_LABEL
from toolkit.render.deploy_vars import DeployVars
from toolkit.errors import ConfigError
from toolkit.render.site import Site

STOP_TASK = "Stop the rollout at this host"  # the site.yml rescue task whose message says what happened


@dataclass(frozen=True)
class Change:
    what: str
    """`plan`, `image`, `model`, `served name`, `flag --x`, `env X`."""
    old: str | None
    """Value on the host now (None: absent)."""
    new: str | None
    """Value after the change (None: removed)."""

    @property
    def kind(self) -> str:
        return "+" if self.old is None else ("-" if self.new is None else "~")


# ---------------------------------------------------------------- releases and their diff

def expected_release(dv: DeployVars, host: str | None = None) -> dict:
    """The release record a bundle makes: exactly what selfhost_release/tasks/record.yml stores on the host.
    host: a multi-node host records its own rank's spec (its host_vars); others, and None, the bundle's."""
    node = dv.selfhost_nodes.get(host) if host else None
    if node:
        return {**node["selfhost_release"].model_dump(mode="json"),
                "vllm": node["selfhost_server"].model_dump(mode="json")}
    return server.release_record(dv)


def rollback_target(kept: dict, to: str | None) -> str | None:
    """The release `selfhost rollback` activates on one host: the one whose id or plan digest starts with
    `to` (None unless exactly one does), or the previous one. Chosen here only: the preview shows it and
    the playbook gets it as a value (selfhost_release_targets), so they cannot differ."""
    records = {k: v for k, v in (kept.get("records") or {}).items() if v}
    if to:
        found = sorted({k for k, v in records.items()
                        if k.startswith(to) or str(v.get("plan_digest", "")).startswith(to)})
        return found[0] if len(found) == 1 else None
    prev = (kept.get("previous") or {}).get("release")
    return prev if prev in records else None


def rollback_groups(infos: dict[str, dict], name: str, targets: dict[str, str | None],
                    order: list[str]) -> tuple[dict[str, dict], int]:
    """Multi-node: which hosts roll back together, and the play's batch size (`serial`).

    A group's ranks run one model: they stop together, start their releases together and are verified as
    one. Each host's group comes from the record it goes back to (`node`, written by `selfhost render`), or
    from its current one when it keeps no target (the playbook then refuses the whole group). Returns
    host → {group, rank, members} for grouped hosts, and the batch size: the group size (inventory order
    forms the groups, and Ansible batches in inventory order), 1 without groups. Refuses (ConfigError, naming
    the fix) a selection that holds part of a group, records that disagree on a group, or a mix of sizes."""
    nodes: dict[str, dict] = {}
    for host, info in infos.items():
        kept = info.get(name) or {}
        records = kept.get("records") or {}
        record = records.get(targets.get(host) or "") or records.get((kept.get("current") or {}).get("release") or "")
        node = (record or {}).get("node")
        if node:
            nodes[host] = {"group": node["group"], "rank": node["rank"], "members": list(node["members"])}
    if not nodes:
        return {}, 1
    for host, node in nodes.items():
        members = node["members"]
        missing = [m for m in members if m not in infos]
        if missing:
            raise ConfigError(
                f"{host} is rank {node['rank']} of replica {node['group']} ({', '.join(members)}): the ranks of a "
                f"replica run one model and roll back together, but {', '.join(missing)} is not selected",
                fix=f"pass --host {','.join(members)} (every rank of the replica), or drop --host")
        disagree = [m for m in members if (nodes.get(m) or {}).get("members") != members]
        if disagree:
            raise ConfigError(
                f"the releases {host} and {', '.join(disagree)} would go back to place them in different groups",
                fix="roll back with --to a release the whole replica kept (see `selfhost status`), or deploy again")
    sizes = {len(n["members"]) for n in nodes.values()}
    ordered = [h for h in order if h in infos]
    if len(nodes) != len(infos) or len(sizes) != 1 or any(
            ordered[i:i + len(n["members"])] != n["members"]
            for i, h in enumerate(ordered) if (n := nodes[h])["rank"] == 0):
        raise ConfigError("the selected hosts mix replicas of different sizes or out of inventory order "
                          f"({', '.join(ordered)}), so they cannot be rolled back one replica at a time",
                          fix="roll back one replica at a time: pass --host with the ranks of one replica")
    return nodes, sizes.pop()


def _flat(record: dict) -> dict:
    """The fields a diff compares, from a record of either schema (1: dirs and name under `vllm`)."""
    v = record.get("vllm") or {}
    # str(): a host record may hold `8000` for "8000" (ansible-core reads `!unsafe '8000'` extra vars as ints).
    return {"image": v.get("image"), "argv": [str(a) for a in v.get("argv") or []],
            "env": {k: str(x) for k, x in (v.get("env") or {}).items()},
            "weights_dir": record.get("weights_dir") or v.get("weights_dir"),
            "served_model_name": record.get("served_model_name") or v.get("served_model_name")}


def release_diff(current: dict | None, new: dict) -> list[Change]:
    """What changes on a host going from its `current` release record to `new` (flags one by one)."""
    if not current:
        return [Change("release", None, f"{new['plan_digest']} (first recorded release)")]
    cv, nv = _flat(current), _flat(new)
    out: list[Change] = []

    def same(what, old, value):
        if old != value:
            out.append(Change(what, old, value))

    same("plan", current.get("plan_digest"), new["plan_digest"])
    same("image", cv.get("image"), nv["image"])
    same("gateway image", (current.get("images") or {}).get("gateway"), new["images"]["gateway"])
    same("model", _revision(cv.get("weights_dir")), _revision(nv["weights_dir"]))
    same("served name", cv.get("served_model_name"), nv["served_model_name"])
    old_f, new_f = argv_flags(cv["argv"]), argv_flags(nv["argv"])
    for flag in [*old_f, *(f for f in new_f if f not in old_f)]:
        o, n = old_f.get(flag, _ABSENT), new_f.get(flag, _ABSENT)
        if o != n:
            out.append(Change(f"flag {flag}", _flag_text(o), _flag_text(n)))
    old_e, new_e = cv["env"], nv["env"]
    for key in sorted(set(old_e) | set(new_e)):
        if old_e.get(key) != new_e.get(key):
            out.append(Change(f"env {key}", old_e.get(key), new_e.get(key)))
    return out


_ABSENT = object()


def _flag_text(v) -> str | None:
    if v is _ABSENT:
        return None
    return "(on)" if v is None else str(v)


def _revision(weights_dir: str | None) -> str | None:
    """The model revision a weights dir names: its content address (last path part)."""
    return weights_dir.rstrip("/").rsplit("/", 1)[-1] if weights_dir else None


def resolve_name(infos: dict[str, dict], given: str | None) -> str:
    """The one deployment the hosts keep (or `given`, checked); infos: host → releases.py answer."""
    names = sorted({n for info in infos.values() for n in info})
    if given:
        if names and given not in names:
            raise ConfigError(f"no deployment '{given}' on the hosts (they keep: {', '.join(names)})",
                              fix=f"pass --name {names[0]}" if len(names) == 1 else "pass --name with one of those")
        return given
    if len(names) == 1:
        return names[0]
    if not names:
        raise ConfigError("the hosts keep no selfhost release to act on",
                          fix="deploy first: selfhost deploy plan.yml -i SITE")
    raise ConfigError(f"the hosts keep several deployments: {', '.join(names)}", fix="pass --name NAME")


# ---------------------------------------------------------------- audit

def audit_record(*, invocation: dict, host: str, status: str, changed: int, plan_digest: str | None,
                 name: str | None = None) -> dict:
    """One audit line: who ran what (`runner.invocation`), when, on which plan, and how it ended on this host."""
    inv = invocation
    return {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "since": inv.get("since"),
            "who": inv.get("who"), "pid": inv.get("pid"), "command": inv.get("command"), "run_id": inv.get("id"),
            "deployment": name, "plan_digest": plan_digest, "host": host, "result": status, "changed": changed}


def host_status(result: runner.DeployResult, host: str) -> str:
    failed = [f for f in result.failed if f.host == host]
    if any(f.step == "lock" for f in failed):
        return "refused: locked"
    stats = result.hosts.get(host)
    if stats and stats.unreachable:
        return "unreachable"
    if failed or (stats and stats.failed):
        return "rolled back" if any(f.task == STOP_TASK and "rolled back automatically" in f.message
                                    for f in failed) else "failed"
    return "ok"


def audit_records(result: runner.DeployResult, *, invocation: dict, plan_digest: str | None,
                  name: str | None = None) -> dict[str, dict]:
    return {h: audit_record(invocation=invocation, host=h, status=host_status(result, h), changed=s.changed,
                            plan_digest=plan_digest, name=name) for h, s in result.hosts.items()}


def append_audit(bundle: Path, result: runner.DeployResult, *, invocation: dict, plan_digest: str | None,
                 name: str | None = None) -> runner.DeployResult | None:
    """Append the run's audit line on every host it reached (audit.yml); a failure here is reported, not raised."""
    if result.check or not result.hosts:
        return None
    records = audit_records(result, invocation=invocation, plan_digest=plan_digest, name=name)
    return operations.execute(bundle, operations.audit(records=records, invocation=invocation, name=name)).result


# ---------------------------------------------------------------- bundles and reads

def ops_bundle(site: Site, out: Path, *, serving: list[str] | None = None) -> Path:
    """A bundle with no plan: the packaged playbooks, the site inventory and site-level vars only.

    Site-level includes the fleet (`selfhost_fleet`, the same value `render` puts in a plan bundle): a
    fleet's one key set is rotated on its first host and copied to every host, which the gateway role
    can only do when it knows the fleet. serving: the hosts that serve the API when replicas span hosts
    (`serving_hosts`, read from the hosts' records; the site alone cannot tell): only they are fleet members."""
    from toolkit.render import bundle as r

    r._refuse_secrets(site)
    s = site.settings
    fleet = r.fleet_vars(site, serving)
    extravars = {"selfhost_verify_egress_probe": s.selfhost_verify_egress_probe,
                 # keys written before labels (value 1) carry it; `keys`/`rotate-keys` list and match them by it
                 "selfhost_gateway_caller_label": s.selfhost_router_caller_label,
                 **({"selfhost_fleet": fleet.model_dump(mode="json")} if fleet else {})}
    contents = {
        "inventory/hosts.yml": r.HEADER + r._yaml(r._inventory(site)),
        "env/extravars": r.HEADER + r.unsafe_yaml(extravars),
        "env/settings": r._yaml({"suppress_ansible_output": False}),
        "env/envvars": r._yaml(r._envvars(site)),
        r.LOCK: "# An ops bundle (no plan): day-2 commands that act on what the hosts keep.\n"
                + r._yaml({"site": str(site.path), "kind": "ops"}),
    }
    return r._write_atomically(Path(out), contents)


def serving_hosts(infos: dict[str, dict], name: str) -> list[str] | None:
    """The hosts whose current release of `name` serves the API (one with a gateway): rank 0 of each multi-node
    group, read from the server spec the host recorded (its node-rank label). None when no host runs a headless
    rank (one-host replicas: every host serves)."""
    ranks = {h: _node_rank((info.get(name) or {}).get("current") or {}) for h, info in infos.items()}
    if all(r in (None, "0") for r in ranks.values()):
        return None
    return [h for h, r in ranks.items() if r in (None, "0")]


def _node_rank(record: dict) -> str | None:
    rank = ((record.get("vllm") or {}).get("labels") or {}).get(NODE_RANK_LABEL)
    return None if rank is None else str(rank)  # str(): a record may hold 0 for "0" (see _flat)


def read_releases(bundle: Path, *, invocation: dict, name: str | None = None,
                  limit: str | None = None) -> dict[str, dict]:
    """host → {deployment: {current, previous, releases, records, lock}} from each host (releases.yml)."""
    with runner.scratch_dir("selfhost-releases-") as tmp:
        extra = {"selfhost_info_dir": str(tmp), "selfhost_run": invocation, **({"selfhost_name": name} if name else {})}
        result = runner.run(bundle, playbook="releases.yml", limit=limit, extravars=extra)
        if not result.ok:
            result.raise_for_status()
        return {f.stem: json.loads(f.read_text() or "{}") for f in sorted(tmp.glob("*.json"))}


def stop_message(result: runner.DeployResult) -> str | None:
    """The rollout's own account of where it stopped and whether the host was rolled back."""
    stop = next((f for f in result.failed if f.task == STOP_TASK), None)
    return stop.message if stop else None


def require_confirmation(what: str, fix: str) -> None:
    """No --yes and no terminal to ask on: refuse (the caller asks when there is one)."""
    raise ConfigError(f"refusing to {what} without confirmation: stdin is not a terminal", fix=fix)
