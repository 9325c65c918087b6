"""Day-2 runs as values: what a command would run, decided before anything runs (Kamal's commands-as-values).

Each builder is pure: it takes what the command decided (deployment name, hosts, targets, who runs
it) and returns an `Operation` — the playbook, the Ansible limit, the run-time extra-vars, the
progress view's steps — or, for `rotate-keys`, a list of steps with a `Wait` between two runs. An
operation whose playbook reports a variable (`bench`: the benchmark client's result) names it in
`report`, and `execute` returns each host's value.
`selfhost <command> --dry-run` prints these values; `execute` is the one place that runs one (through `execute` here, which `toolkit.commands.lifecycle.execute` wraps with the
live progress view). Unit tests compare them (tests/unit/test_operations.py). Nothing here prints;
only `execute` touches hosts.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from toolkit.deploy import readout, runner
from toolkit.errors import ConfigError

# selfhost upgrade: one host at a time, stop at the first failure, roll that host back.
ROLLOUT_VARS = {
    "selfhost_rollout_serial": 1,
    "selfhost_rollout_max_fail_percentage": 0,
    "selfhost_rollout_auto_rollback": True,
}


@dataclass(frozen=True)
class Operation:
    """One playbook run of a bundle, fully decided."""

    command: str
    """The selfhost command it serves (`rollback`, `deploy --check`): named in progress and failures."""
    playbook: str
    """Playbook of the bundle's project/ (`site.yml`, `rollback.yml`, …)."""
    title: str
    """Title of the live progress view."""
    steps: tuple[str, ...]
    """Columns of the live progress view (role steps, in order)."""
    limit: str | None = None
    """Ansible `--limit` (None: every host of the bundle)."""
    extravars: dict[str, Any] = field(default_factory=dict)
    """Run-time variables (`-e`, passed as an `!unsafe` file, never written into the bundle)."""
    check: bool = False
    """Ansible check mode: nothing changes on the hosts."""
    fetch_keys: bool = False
    """Fetch the gateway's API-key files into a private folder that is read, then deleted."""
    rotation: str | None = None
    """With fetch_keys: read only the key of this rotation (rotate-keys), not every key."""
    report: str | None = None
    """The variable the playbook's last task reports per host (`debug: var=…`); `execute` returns its values."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["steps"] = list(self.steps)
        return d


@dataclass(frozen=True)
class Wait:
    """A pause between two runs (rotate-keys: the grace window in which old and new keys both work)."""

    seconds: int
    reason: str

    def to_dict(self) -> dict:
        return {"wait_s": self.seconds, "reason": self.reason}


Step = Union[Operation, Wait]


def describe(steps: list[Step]) -> list[dict]:
    """The steps as JSON-able dicts (what `--dry-run --json` prints under `operations`)."""
    return [s.to_dict() for s in steps]


def _base(invocation: dict, name: str | None = None) -> dict:
    """Every mutating run carries who runs it (host lock owner, audit) and, for plan-less ones, the deployment."""
    return {"selfhost_run": invocation, **({"selfhost_name": name} if name else {})}


# ---------------------------------------------------------------- deploy and upgrade (a rendered plan)

def deploy_check(*, limit: str | None) -> Operation:
    """`deploy --check`: preflight and end-to-end verify of what is deployed; changes nothing."""
    return Operation(command="deploy --check", playbook="check.yml", title="check", steps=tuple(runner.STEPS),
                     limit=limit, check=True)


def deploy_preview(*, limit: str | None, invocation: dict) -> Operation:
    """The check-mode run of site.yml that `deploy` shows before asking."""
    return Operation(command="deploy", playbook=runner.PLAYBOOK, title="deploy preview", steps=tuple(runner.STEPS),
                     limit=limit, extravars=_base(invocation), check=True)


def deploy(*, limit: str | None, invocation: dict, verify_weights: bool = False) -> Operation:
    """verify_weights: re-hash every weight file (a normal run hashes only files whose stat changed)."""
    extra = {"selfhost_weights_verify_full": True} if verify_weights else {}
    return Operation(command="deploy", playbook=runner.PLAYBOOK, title="deploy", steps=tuple(runner.STEPS),
                     limit=limit, extravars={**_base(invocation), **extra}, fetch_keys=True)


def upgrade(*, invocation: dict) -> Operation:
    """site.yml one host at a time; a host that fails verify is rolled back and the rollout stops."""
    return Operation(command="upgrade", playbook=runner.PLAYBOOK, title="upgrade (one host at a time)",
                     steps=("lock", *runner.STEPS, "release"), extravars={**_base(invocation), **ROLLOUT_VARS},
                     fetch_keys=True)


# ---------------------------------------------------------------- plan-less day-2 runs (the ops bundle)

def rollback(*, name: str, invocation: dict, host: str | None, to: str | None,
             targets: dict[str, str | None], groups: dict[str, dict] | None = None, serial: int = 1) -> Operation:
    """Activate `targets` (host → release id, chosen by `releases.rollback_target`), one host at a time, or,
    for multi-node replicas (`groups`: host → {group, rank, members}, `serial`: the group size, both from
    `releases.rollback_groups`), one replica at a time: every rank stops, each re-runs its own release, they
    start together and rank 0 is verified through its gateway."""
    extra = {"selfhost_rollback_groups": groups, "selfhost_rollback_serial": serial} if groups else {}
    return Operation(command="rollback", playbook="rollback.yml",
                     title="rollback (one replica at a time, its ranks together)" if groups
                     else "rollback (one host at a time)",
                     steps=("lock", "release", "verify"), limit=host,
                     extravars={**_base(invocation, name), "selfhost_rollback_to": to or "",
                                "selfhost_release_targets": {h: t or "" for h, t in targets.items()}, **extra})


def destroy(*, name: str, invocation: dict, host: str | None, purge: bool) -> Operation:
    return Operation(command="destroy", playbook="destroy.yml", title="destroy", steps=("lock", "release"),
                     limit=host, extravars={**_base(invocation, name), "selfhost_destroy_purge": purge})


def unlock(*, name: str, invocation: dict, host: str) -> Operation:
    return Operation(command="unlock", playbook="unlock.yml", title="unlock", steps=("lock",), limit=host,
                     extravars=_base(invocation, name))


def rotate_keys(*, name: str, invocation: dict, host: str | None, grace_s: int, rotation: str,
                fleet: list[str] | None = None, serving: list[str] | None = None) -> list[Step]:
    """Add a new key beside the old ones (shown once), wait `grace_s`, then retire the old ones.

    `fleet`: the hosts of a fleet (site `selfhost_fleet: true`), which share one key set. Each phase then runs
    on every host at once: the first host changes the file, every host installs the same bytes and reloads
    before the phase ends, so the new key works everywhere before anyone has it, and the old one works
    everywhere until the retire phase. One host alone cannot be rotated: its key is every host's key.
    `serving`: multi-node replicas: the hosts with a gateway (rank 0 of each group); the runs are limited to
    them (a headless rank has no keys), and --host must name one of them.
    """
    limit = _key_limit("rotate-keys", name, host, fleet, serving)
    extra = {**_base(invocation, name), "selfhost_rotation_id": rotation}
    where = f" on every host of the fleet ({', '.join(fleet)})" if fleet else ""

    def phase(which: str, title: str, **kw) -> Operation:
        return Operation(command="rotate-keys", playbook="rotate_keys.yml", title=title + where,
                         steps=("lock", "gateway"), limit=limit,
                         extravars={**extra, "selfhost_rotation_phase": which}, **kw)

    return [phase("add", "rotate keys: add", fetch_keys=True, rotation=rotation),
            Wait(grace_s, "old and new key both work on every host of the fleet while clients switch" if fleet
                 else "old keys keep working while clients switch to the new ones"),
            phase("retire", "rotate keys: retire old")]


def _key_limit(command: str, name: str, host: str | None, fleet: list[str] | None,
               serving: list[str] | None) -> str | None:
    """The Ansible limit of a run that changes API keys: a fleet's one key set changes on every host together
    (--host refused); multi-node replicas: only the hosts with a gateway (rank 0 of each group)."""
    if fleet and host is not None:
        raise ConfigError(f"{command} --host {host}: {name} is a fleet with one key set shared by "
                          f"{', '.join(fleet)}; changing it on one host would break the others",
                          fix="drop --host: the fleet's keys change on every host together")
    if serving and host is not None and host not in serving:
        raise ConfigError(f"{command} --host {host}: {host} runs a headless rank of {name}: it has no gateway "
                          "and no keys", fix=f"name the rank-0 host of its group (one of {', '.join(serving)})")
    return host or (",".join(serving) if serving else None)


def keys_add(*, name: str, invocation: dict, host: str | None, label: str, tag: str,
             fleet: list[str] | None = None, serving: list[str] | None = None) -> Operation:
    """A fresh API key with caller label `label` on each host (a fleet: one key for every host), tagged `tag`
    (a re-run with the same tag adds nothing); the new key is fetched once, to be shown once."""
    where = f" on every host of the fleet ({', '.join(fleet)})" if fleet else ""
    return Operation(command="keys add", playbook="keys.yml", title=f"keys: add {label}{where}",
                     steps=("lock", "gateway"), limit=_key_limit("keys add", name, host, fleet, serving),
                     extravars={**_base(invocation, name), "selfhost_keys_action": "add", "selfhost_keys_label": label,
                                "selfhost_keys_tag": tag},
                     fetch_keys=True, rotation=tag)


def keys_revoke(*, name: str, invocation: dict, host: str | None, label: str,
                fleet: list[str] | None = None, serving: list[str] | None = None) -> Operation:
    """Every API key with caller label `label` stops working (graceful reload: requests in flight finish)."""
    where = f" on every host of the fleet ({', '.join(fleet)})" if fleet else ""
    return Operation(command="keys revoke", playbook="keys.yml", title=f"keys: revoke {label}{where}",
                     steps=("lock", "gateway"), limit=_key_limit("keys revoke", name, host, fleet, serving),
                     extravars={**_base(invocation, name), "selfhost_keys_action": "revoke",
                                "selfhost_keys_label": label})


def keys_list(*, name: str, invocation: dict, host: str | None, serving: list[str] | None = None) -> Operation:
    """Each host's key labels, counts and tags (a fleet's first host answers for all); never a key."""
    limit = host or (",".join(serving) if serving else None)
    return Operation(command="keys list", playbook="keys.yml", title="keys: list", steps=("gateway",), limit=limit,
                     extravars={**_base(invocation, name), "selfhost_keys_action": "list"},
                     report="_selfhost_gateway_keys")


def bench(*, host: str, argv: list[str], result_dir: str, result_file: str) -> Operation:
    """Run the benchmark client (`docker run` decided by `toolkit.operate.bench.client_argv`) on one host
    and report its JSON result from `result_dir` (bench.yml); nothing stays on the host."""
    return Operation(command="bench", playbook="bench.yml", title="bench", steps=("bench",), limit=host,
                     extravars={"selfhost_bench_argv": argv, "selfhost_bench_dir": result_dir,
                                "selfhost_bench_file": result_file},
                     report="_selfhost_bench")


def audit(*, records: dict[str, dict], invocation: dict, name: str | None) -> Operation:
    """Append one audit line per host the run reached (audit.yml)."""
    return Operation(command="audit", playbook="audit.yml", title="audit", steps=("audit",), limit=",".join(records),
                     extravars={"selfhost_audit_records": records, **_base(invocation, name)})


# ---------------------------------------------------------------- the executor

@dataclass(frozen=True)
class Executed:
    result: runner.DeployResult
    """The run: status, per-host stats, failed tasks."""
    keys: dict[str, str] = field(default_factory=dict)
    """host → API key fetched by the run (fetch_keys operations only); shown once, stored nowhere here."""
    reports: dict[str, Any] = field(default_factory=dict)
    """host → the value of the operation's `report` variable (hosts that got that far)."""
    labelled_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    """host → {caller label: API key} fetched by the run (rotate-keys: one new key per label); shown once."""


def execute(bundle: Path, op: Operation, *, on_event: Callable[[runner.TaskEvent], None] | None = None) -> Executed:
    """Run one Operation on a bundle: the only way a day-2 write reaches `runner.run`.

    Keys the run fetches land in a private scratch folder that is read and deleted before this returns.
    """
    reports: dict[str, Any] = {}

    def on_raw(event: dict) -> None:
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        if event.get("event") == "runner_on_ok" and op.report in res and res[op.report] != readout.UNDEFINED:
            reports[data.get("host") or "?"] = res[op.report]

    kw = dict(check=op.check, limit=op.limit, playbook=op.playbook, extravars=op.extravars, command=op.command,
              on_event=on_event, on_raw_event=on_raw if op.report else None)
    if not op.fetch_keys:
        return Executed(runner.run(bundle, **kw), reports=reports)
    with runner.scratch_dir("selfhost-keys-") as key_dir:
        result = runner.run(bundle, key_fetch_dir=key_dir, **kw)
        default = (op.extravars.get("selfhost_gateway_caller_label") or "default")
        return Executed(result, read_keys(key_dir, op.rotation), reports,
                        read_labelled_keys(key_dir, op.rotation, default))


# A key line of api-keys.conf: the key, its value (1: written before labels, else the quoted caller label)
# and the tag of the run that added it (`# rotation=…` or `# issued=…`).
_KEY_RE = re.compile(r'"Bearer ([0-9A-Za-z._~+/-]{16,})"\s+(1|"[^"]*");(?:\s*# (?:rotation|issued)=(\S+))?')


def read_keys(key_dir: Path, rotation: str | None = None) -> dict[str, str]:
    """host → its API key, from the gateway key files a run fetched into key_dir (one `<host>.conf` each):
    the first key of each file, or with `rotation` the (first) key added by that rotation or `keys add`."""
    return {host: next(iter(by_label.values())) for host, by_label in read_labelled_keys(key_dir, rotation).items()
            if by_label}


def read_labelled_keys(key_dir: Path, rotation: str | None = None, default_label: str = "default"
                       ) -> dict[str, dict[str, str]]:
    """host → {caller label: key} of the keys a run fetched (a key valued 1 carries `default_label`)."""
    keys: dict[str, dict[str, str]] = {}
    for f in sorted(Path(key_dir).glob("*.conf")):
        mine = keys.setdefault(f.stem, {})
        for key, value, rid in _KEY_RE.findall(f.read_text()):
            if rotation is None or rid == rotation:
                mine.setdefault(default_label if value == "1" else value.strip('"'), key)
    return {h: v for h, v in keys.items() if v}
