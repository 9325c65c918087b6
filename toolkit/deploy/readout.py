"""Run a read-only playbook of a bundle and read one reported variable per host from the events.

The day-2 playbooks (doctor.yml, status.yml, logs.yml) end with `ansible.builtin.debug: var=X`;
ansible-runner's `runner_on_ok` event for that task carries X's value, already structured, in
`event_data.res[X]`. Nothing is scraped from text. Raises `toolkit.errors`; prints nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.deploy import runner as deployer

UNDEFINED = "VARIABLE IS NOT DEFINED!"  # what ansible.builtin.debug reports for a missing var


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
