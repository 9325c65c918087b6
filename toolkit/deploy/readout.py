"""Facts from the hosts: run a read-only playbook of a bundle and read one reported variable per host.

The day-2 playbooks (doctor.yml, status.yml, logs.yml) end with `ansible.builtin.debug: var=X`;
ansible-runner's `runner_on_ok` event for that task carries X's value, already structured, in
`event_data.res[X]`. Nothing is scraped from text. A `Fact` names the playbook and the variable
(pyinfra's fact = command + parser: the parser is the reading command's own pure `shape`);
`gather` runs it and answers, per host, the reported value or why there is none (`Unreachable`,
`NoReport`). Raises `toolkit.errors`; prints nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from toolkit.deploy import capture
from toolkit.deploy import runner as deployer

UNDEFINED = "VARIABLE IS NOT DEFINED!"  # what ansible.builtin.debug reports for a missing var


@dataclass(frozen=True)
class Fact:
    """What a read-only command asks every host: a playbook that reports one variable."""

    playbook: str
    """Read-only playbook of the bundle (run in check mode)."""
    var: str
    """The variable its last task reports (`ansible.builtin.debug: var=…`)."""
    kind: type = object
    """The type a report must have (list, dict); anything else counts as no report."""
    nothing: str = "the playbook reported nothing"
    """Why, when a reachable host reported nothing and no task of it failed."""


@dataclass(frozen=True)
class Unreachable:
    """The host could not be reached (SSH)."""

    why: str


@dataclass(frozen=True)
class NoReport:
    """The host was reached but reported no value of the fact's kind (a task failed first, or the run did)."""

    why: str


Answer = Union[Unreachable, NoReport, Any]


@dataclass
class Readout:
    result: deployer.DeployResult
    """The run (status, per-host stats, failed tasks)."""
    values: dict[str, Any] = field(default_factory=dict)
    """host → the reported variable's value (hosts that did not get that far are absent)."""

    def unreachable(self) -> dict[str, str]:
        """host → why it could not be reached."""
        dark = [h for h, s in self.result.hosts.items() if s.unreachable]
        first: dict[str, str] = {}
        for f in self.result.failed:
            first.setdefault(f.host, f.message)
        return {h: first.get(h, "unreachable") for h in dark}

    def failures(self) -> dict[str, str]:
        """host → its first failed task; key `*` for a failure of the run itself (e.g. a syntax error)."""
        out: dict[str, str] = {}
        for f in self.result.failed:
            out.setdefault("*" if f.host == "-" else f.host, f"{f.task}: {f.message}")
        return out


def collect(bundle: Path, playbook: str, var: str, *, limit: str | None = None, extravars: dict | None = None,
            timeout_s: int | None = None) -> Readout:
    """Run `playbook` (always in check mode: these playbooks change nothing) and gather `var` per host."""
    values: dict[str, Any] = {}

    def on_raw(event: dict) -> None:
        if event.get("event") != "runner_on_ok":
            return
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        if var in res and res[var] != UNDEFINED:
            values[data.get("host") or "?"] = res[var]

    result = deployer.run(bundle, check=True, limit=limit, playbook=playbook, extravars=extravars,
                          on_raw_event=on_raw, timeout_s=timeout_s)
    return Readout(result=result, values=values)


def classify(fact: Fact, hosts: list[str], values: dict[str, Any], unreachable: dict[str, str],
             failures: dict[str, str]) -> dict[str, Answer]:
    """host → its reported value, or `Unreachable` / `NoReport` saying why not (pure; `hosts` order kept,
    hosts that reported without being asked for last)."""
    out: dict[str, Answer] = {}
    for host in hosts + sorted(set(values) - set(hosts)):
        if host in unreachable:
            out[host] = Unreachable(unreachable[host])
        elif not isinstance(values.get(host), fact.kind) or host not in values:
            out[host] = NoReport(failures.get(host) or failures.get("*") or fact.nothing)
        else:
            out[host] = values[host]
    return out


def gather(bundle: Path, fact: Fact, hosts: list[str], *, limit: str | None = None,
           extravars: dict | None = None, timeout_s: int | None = None) -> dict[str, Answer]:
    """Run the fact's playbook on the bundle's `hosts` (or `limit`) and classify each host's answer."""
    r = collect(bundle, fact.playbook, fact.var, limit=limit, extravars=extravars, timeout_s=timeout_s)
    wanted = [h for h in hosts if limit is None or h == limit]
    capture.record(fact.playbook, fact.var, wanted, r.result, r.values)  # no-op unless a test asks for it
    return classify(fact, wanted, r.values, r.unreachable(), r.failures())
