"""`selfhost doctor`: the preflight checks plus checks of the running deployment, as data.

The stable JSON contract (`selfhost doctor --json`):

    {"ok": bool, "checks": [{"host": str, "name": str, "ok": bool, "detail": str, "remedy": str}]}

Exit codes: 0 every check passed, 1 a check failed, 2 doctor could not run (a host unreachable,
a bad bundle or site). The checks come from `playbooks/doctor.yml`, which records each one in
the `_selfhost_preflight_checks` list (see the selfhost_preflight role) and reports the list in a
final task. Fact (`FACT`) + parser (`shape`, pure); `gather` is the only function that touches hosts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolkit.deploy import readout
from toolkit.errors import EXIT_HOSTS, EXIT_NO, EXIT_OK, DeployError

FACT = readout.Fact(playbook="doctor.yml", var="_selfhost_preflight_checks", kind=list,
                    nothing="the doctor playbook reported no checks")
EXIT_FAILED, EXIT_COULD_NOT_RUN = EXIT_NO, EXIT_HOSTS


class DoctorCouldNotRun(DeployError):
    """Doctor could not check a host (unreachable, or the bundle/site is unusable): exit code 2."""

    exit_code = EXIT_COULD_NOT_RUN


@dataclass(frozen=True)
class Check:
    host: str
    """Inventory host name."""
    name: str
    """Stable check id (os, memory, disk, gateway_port, server_container, certificate, …)."""
    ok: bool
    detail: str
    """What was found, with numbers."""
    remedy: str
    """What to do when it failed (also filled when it passed, for reference)."""


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)
    could_not_run: list[str] = field(default_factory=list)
    """Hosts doctor could not check (exit code 2)."""

    @property
    def ok(self) -> bool:
        return not self.could_not_run and all(c.ok for c in self.checks)

    @property
    def exit_code(self) -> int:
        if self.could_not_run:
            return EXIT_COULD_NOT_RUN
        return EXIT_OK if self.ok else EXIT_FAILED

    def to_dict(self) -> dict:
        """The stable JSON contract."""
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1")
    return bool(value)


def shape(answers: dict[str, Any]) -> DoctorReport:
    """Per-host check lists (`readout.gather` answers) → one report, host order kept.

    Every host gets a `reachable` check first; a host that could not be reached or that failed
    before reporting gets one failed record saying why, and makes the exit code 2.
    """
    report = DoctorReport()
    for host, raw in answers.items():
        if isinstance(raw, readout.Unreachable):
            report.could_not_run.append(host)
            report.checks.append(Check(host, "reachable", False, f"{host} is unreachable: {raw.why}",
                                       "check the host is up and SSH answers: ansible_host, ansible_port, "
                                       "ansible_user and the key in the site's hosts.yml / group_vars"))
            continue
        if isinstance(raw, readout.NoReport):
            report.could_not_run.append(host)
            report.checks.append(Check(host, "doctor", False, f"doctor could not check {host}: {raw.why}",
                                       "fix what the message names (become/sudo, Python on the host), then run "
                                       "`selfhost doctor` again"))
            continue
        report.checks.append(Check(host, "reachable", True, f"{host} answered over SSH", ""))
        for item in raw:
            item = item if isinstance(item, dict) else {}
            report.checks.append(Check(
                host=host, name=str(item.get("name", "?")), ok=_as_bool(item.get("ok")),
                detail=" ".join(str(item.get("detail", "")).split()),
                remedy=" ".join(str(item.get("remedy", "")).split())))
    return report


def gather(bundle: Path, hosts: list[str], *, limit: str | None = None) -> DoctorReport:
    """Run playbooks/doctor.yml (check mode, read-only) on the bundle's hosts and shape the result."""
    return shape(readout.gather(bundle, FACT, hosts, limit=limit))
