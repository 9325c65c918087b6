"""Run a rendered bundle with ansible-runner and report what happened, host by host.

The deployer takes a bundle directory (ansible-runner's private_data_dir, written by
`toolkit.render.bundle`) and nothing else: it never reads the Plan. Progress goes to an `on_event`
callback as `TaskEvent`s; the result is a `DeployResult`. It prints nothing.

Secrets: tasks that touch the API key or TLS key use `no_log`, so ansible-runner's events and
artifacts hold only "censored" placeholders for them. Artifacts live outside the bundle (a re-render
replaces the bundle; the artifacts an error message points at must survive it):
`<bundle parent>/.selfhost-artifacts/<bundle name>/<run id>/`, the newest ARTIFACTS_KEEP runs kept.
"""

from __future__ import annotations

import os
import re
import sys
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from toolkit.errors import EXIT_CANCELED, DeployError, DeployTimeout, LockedError, check_bundle

PLAYBOOK = "site.yml"
# Hosts are deployed in parallel: Ansible starts min(forks, hosts in the batch) workers, so a high
# ceiling costs a small fleet nothing and keeps a re-deploy's time flat as hosts are added (with 10,
# an eleventh host doubles every task's time). Check-mode runs get it too (they used Ansible's 5).
FORKS = 50
# Steps of site.yml, by role, in order: the progress view's columns.
STEPS = ["preflight", "runtime", "images", "weights", "vllm", "gateway", "verify"]
_EVENT_STATUS = {
    "runner_on_start": "started",
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
    "runner_item_on_failed": "failed",
}
_SECRET_HINTS = ("BEGIN PRIVATE KEY", "BEGIN EC PRIVATE KEY", "Bearer ")
ARTIFACTS_KEEP = 20
FACT_CACHE_S = 600  # how long gathered facts are reused by the next run of the same bundle
# The selfhost command each playbook serves: failures name it (not always `deploy`).
COMMANDS = {"site.yml": "deploy", "check.yml": "deploy --check", "rollback.yml": "rollback",
            "destroy.yml": "destroy", "unlock.yml": "unlock", "rotate_keys.yml": "rotate-keys", "keys.yml": "keys",
            "doctor.yml": "doctor", "status.yml": "status", "logs.yml": "logs", "releases.yml": "releases",
            "audit.yml": "audit", "bench.yml": "bench"}
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(text: str) -> str:
    """`text` without ANSI colour codes or other control characters (Ansible colours its output)."""
    return _ANSI_RE.sub("", text)


def artifacts_dir(bundle_dir: Path) -> Path:
    """Where ansible-runner keeps the runs of a bundle: beside it, so a re-render does not delete them."""
    bundle_dir = Path(bundle_dir).absolute()
    return bundle_dir.parent / ".selfhost-artifacts" / bundle_dir.name


class DeployCanceled(DeployError):
    """The run was interrupted (Ctrl-C)."""

    exit_code = EXIT_CANCELED


@dataclass(frozen=True)
class TaskEvent:
    host: str
    """Inventory host name."""
    step: str
    """Role step (`preflight` … `verify`), or `setup` for fact gathering."""
    task: str
    """Task name as written in the role (a sentence)."""
    status: str
    """started | ok | changed | failed | skipped | unreachable."""
    message: str | None = None
    """Failure message (failed/unreachable only)."""


@dataclass
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0


@dataclass
class FailedTask:
    host: str
    step: str
    task: str
    message: str


@dataclass
class DeployResult:
    status: str
    """ansible-runner status: successful | failed | timeout | canceled."""
    rc: int
    check: bool
    """True when the run was a --check preview (nothing changed on the hosts)."""
    hosts: dict[str, HostStats] = field(default_factory=dict)
    failed: list[FailedTask] = field(default_factory=list)
    changed_tasks: dict[str, list[str]] = field(default_factory=dict)
    """host → "step: task" of every task that reported (or, in check mode, would report) a change."""
    artifacts: str | None = None
    wall_s: float = 0.0
    command: str = field(default="deploy", repr=False)
    """The selfhost command that ran (named in the failure message); not part of to_dict()."""

    @property
    def ok(self) -> bool:
        return self.status == "successful" and not self.failed

    @property
    def total_changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("command", None)
        d["ok"] = self.ok
        return d

    def raise_for_status(self) -> None:
        """Map ansible-runner's status to the error tree (exit codes 2, 3, 130)."""
        if self.ok:
            return
        first = self.failed[0] if self.failed else None
        where = f"{first.host}: {first.step}: {first.task}: {first.message}" if first else f"rc {self.rc}"
        hint = f"ansible-runner artifacts: {self.artifacts}" if self.artifacts else None
        locked = next((f for f in self.failed if f.step == "lock"), None)
        if locked is not None:  # another run holds a host: nothing was changed
            raise LockedError(locked.message, hint=hint)
        if self.status == "timeout":
            raise DeployTimeout(f"{self.command.split()[0]} timed out ({where})", hint=hint)
        if self.status == "canceled":
            raise DeployCanceled(f"{self.command.split()[0]} canceled", hint=hint)
        what = self.command.split()[0]
        raise DeployError(f"{what} failed on {len({f.host for f in self.failed}) or '?'} host(s): {where}",
                          fix=f"fix what the message names, then run `selfhost {self.command}` again"
                              + (" (every step is idempotent)" if what == "deploy" else ""),
                          hint=hint)


def _step_of(event_data: dict) -> str:
    role = event_data.get("role") or ""
    if role.startswith("selfhost_"):
        return role[len("selfhost_"):]
    return "setup" if (event_data.get("task_action") or "").endswith("gather_facts") else (role or "setup")


def _message(res: dict) -> str:
    if res.get("censored"):
        return "(output hidden: no_log task)"
    msg = res.get("msg") or res.get("reason") or ""
    if res.get("stderr") and (not msg or msg == "non-zero return code"):
        msg = f"{msg}: {res['stderr']}" if msg else res["stderr"]
    if not msg and res.get("results"):  # a loop: first failed item
        for item in res["results"]:
            if isinstance(item, dict) and item.get("failed"):
                return _message(item)
    text = " ".join(plain(str(msg)).split())
    if any(h in text for h in _SECRET_HINTS):  # belt and braces: never surface key material
        return "(message withheld: it looked like it held a secret)"
    return text[:1500]


class _Collector:
    def __init__(self, result: DeployResult, on_event: Callable[[TaskEvent], None] | None,
                 on_raw_event: Callable[[dict], None] | None = None):
        self.result = result
        self.on_event = on_event
        self.on_raw_event = on_raw_event

    def __call__(self, event: dict) -> bool:
        if self.on_raw_event is not None:
            self.on_raw_event(event)
        kind = event.get("event", "")
        status = _EVENT_STATUS.get(kind)
        if status is None:
            return True
        data = event.get("event_data") or {}
        host = data.get("host") or data.get("remote_addr") or "?"
        task = data.get("task") or ""
        step = _step_of(data)
        res = data.get("res") or {}
        msg = None
        changed = res.get("changed")
        if res.get("censored"):  # no_log: the result is hidden, Ansible's status line is not
            changed = (event.get("stdout") or "").lstrip("\x1b[0;3m123456789").startswith("changed")
        if status == "ok" and changed:
            status = "changed"
            self.result.changed_tasks.setdefault(host, []).append(f"{step}: {task}")
        if status in ("failed", "unreachable"):
            if data.get("ignore_errors"):
                return True
            msg = _message(res)
            if kind != "runner_item_on_failed":
                self.result.failed.append(FailedTask(host=host, step=step, task=task, message=msg))
        if self.on_event is not None:
            self.on_event(TaskEvent(host=host, step=step, task=task, status=status, message=msg))
        return True


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A private temporary folder for what a run fetches from the hosts (API keys, release records)
    or hands to it (run-time vars); deleted when the block ends, however it ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fact_cache_env(bundle_dir: Path) -> dict[str, str]:
    """Ansible settings that keep gathered facts beside the bundle's artifacts for FACT_CACHE_S (in a
    sibling folder: ansible-runner's rotation deletes whatever is oldest inside the artifacts folder).

    A play without `gather_facts` (site.yml) then gathers only for hosts with no fresh entry
    (`smart`): `selfhost deploy` runs a check-mode preview and then the deploy, and users re-run it
    to check for drift; what site.yml reads (OS, Python, service manager, default route) does not
    change in minutes. Playbooks that say `gather_facts: true` still gather every time."""
    return {"ANSIBLE_GATHERING": "smart", "ANSIBLE_CACHE_PLUGIN": "ansible.builtin.jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": f"{artifacts_dir(bundle_dir)}.facts",
            "ANSIBLE_CACHE_PLUGIN_TIMEOUT": str(FACT_CACHE_S)}


def invocation(command: str, site: str | None = None) -> dict:
    """Who runs this (the host lock's owner record, `selfhost_run`): id, user@host, pid, command, since, site."""
    import getpass
    import socket
    import time
    import uuid

    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers)
        user = str(os.getuid())
    return {"id": uuid.uuid4().hex, "who": f"{user}@{socket.gethostname()}", "pid": os.getpid(),
            "command": command, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "site": site or "SITE"}


def run(bundle_dir: Path, *, check: bool = False, limit: str | None = None,
        on_event: Callable[[TaskEvent], None] | None = None, key_fetch_dir: Path | None = None,
        playbook: str = PLAYBOOK, timeout_s: int | None = None, extravars: dict | None = None,
        on_raw_event: Callable[[dict], None] | None = None, command: str | None = None) -> DeployResult:
    """Run `playbook` of the bundle; returns the result (call `raise_for_status()` to turn failure into an error).

    extravars: run-time variables (`-e`), never written into the bundle. on_raw_event: every
    ansible-runner event dict as it arrives (the read-only day-2 commands read task results from it).
    command: the selfhost command named when the run fails (default: the one that runs `playbook`).
    """
    import time

    from ansible_runner.interface import init_runner

    bundle_dir = Path(bundle_dir).absolute()
    check_bundle(bundle_dir, (f"project/{playbook}", "env/extravars"))
    venv_bin = str(Path(sys.executable).parent)  # ansible-playbook lives beside this Python
    envvars = {"PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""), **fact_cache_env(bundle_dir)}
    # selfhost_run: who runs this (host lock owner, audit); a CLI command passes its own.
    extravars = {"selfhost_run": invocation(f"ansible-playbook {playbook}"), **(extravars or {})}
    if key_fetch_dir is not None:
        extravars["selfhost_gateway_key_fetch_dir"] = str(Path(key_fetch_dir).absolute())
    # Always explicit: ansible-runner would otherwise fall back to a stale env/cmdline file.
    cmdline = f"--forks {FORKS}" + (" --check" if check else "")
    result = DeployResult(status="unknown", rc=-1, check=check,
                          command=command or COMMANDS.get(playbook, playbook.removesuffix(".yml")))
    artifact_root = artifacts_dir(bundle_dir)
    artifact_root.mkdir(parents=True, exist_ok=True)
    # Facts hold the hosts' environment: private, like each run's own folder.
    Path(envvars["ANSIBLE_CACHE_PLUGIN_CONNECTION"]).mkdir(mode=0o700, exist_ok=True)
    # Run-time vars hold what a user typed (--since, --to, --name, the command line): passed as a file
    # whose strings are all `!unsafe`, never as JSON on the command line, so Ansible evaluates no Jinja in them.
    from toolkit.render.bundle import unsafe_yaml

    with scratch_dir("selfhost-vars-") as vars_dir:
        vars_file = vars_dir / "extravars.yml"
        vars_file.write_text(unsafe_yaml(extravars))
        started = time.monotonic()
        r = init_runner(
            private_data_dir=str(bundle_dir),
            playbook=playbook,
            limit=limit,
            cmdline=cmdline,
            envvars=envvars,
            extravars=str(vars_file),
            event_handler=_Collector(result, on_event, on_raw_event),
            quiet=True,
            suppress_env_files=True,  # never write our run-time options (or the key dir) into the bundle
            artifact_dir=str(artifact_root),
            # Not "jsonfile": ansible-runner would point the fact cache at this run's own (new) folder,
            # overriding fact_cache_env()'s, which outlives the run.
            fact_cache_type="selfhost",
            rotate_artifacts=ARTIFACTS_KEEP,
            timeout=timeout_s,
            ident=f"{time.strftime('%Y%m%dT%H%M%S')}-{'check' if check else 'deploy'}",
        )
        # The bundle's env/settings may ask for Ansible's own output; the CLI owns the terminal.
        r.config.suppress_ansible_output = True
        r.run()
    result.wall_s = round(time.monotonic() - started, 1)
    result.status, result.rc = r.status, r.rc
    result.artifacts = str(r.config.artifact_dir)
    stats = r.stats or {}
    hosts = set()
    for key in ("ok", "changed", "failures", "dark", "skipped", "processed"):
        hosts.update((stats.get(key) or {}).keys())
    for h in sorted(hosts):
        result.hosts[h] = HostStats(
            ok=stats.get("ok", {}).get(h, 0), changed=stats.get("changed", {}).get(h, 0),
            failed=stats.get("failures", {}).get(h, 0), unreachable=stats.get("dark", {}).get(h, 0),
            skipped=stats.get("skipped", {}).get(h, 0))
    if result.status == "failed" and not result.failed:  # e.g. a syntax error: no task event
        tail = (r.stdout.read() if hasattr(r.stdout, "read") else "")[-1500:]
        result.failed.append(FailedTask(host="-", step="-", task="ansible-playbook",
                                        message=" ".join(plain(tail).split())))
    return result
