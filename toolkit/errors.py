"""The one exception tree and the one exit-code table. Library code raises these; only `toolkit.cli`
turns them into output.

Each error carries what went wrong, what to do about it (`fix`) and the next command (`hint`).

Exit codes — every command keeps to this table (README, "Day 2"):

    0    EXIT_OK        done: every host serving, every check passed
    1    EXIT_NO        refused or found wanting: bad input (ConfigError, CatalogError, PlanError,
                        NoFitError, LicenseError, RenderError), a failed check (doctor), a host that
                        is not serving (status), failed requests (bench), a "no" at the prompt
    2    EXIT_HOSTS     the hosts could not do it: a task failed on a host, a host was locked by
                        another run, or a host could not be reached or read (DeployError and its
                        kin; status/logs with an unreadable host; doctor when it could not run)
    3    EXIT_TIMEOUT   a run on the hosts timed out (DeployTimeout)
    64   EXIT_USAGE     the command line is wrong: unknown option, bad value (sysexits EX_USAGE;
                        Click's own usage errors are mapped to it by `toolkit.cli`)
    130  EXIT_CANCELED  interrupted (Ctrl-C)
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_NO = 1
EXIT_HOSTS = 2
EXIT_TIMEOUT = 3
EXIT_USAGE = 64
EXIT_CANCELED = 130


class SelfhostError(Exception):
    """Base of every error a user can cause or fix."""

    exit_code = EXIT_NO

    def __init__(self, message: str, *, fix: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.hint = hint

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": self.message, "fix": self.fix, "hint": self.hint}


class ConfigError(SelfhostError):
    """A file or option the user gave is malformed (plan.yml, inventory, catalog override)."""


class NotABundle(ConfigError):
    """A folder given (or recorded) as a rendered bundle is not one."""

    def __init__(self, path: Path | str, missing: list[str]) -> None:
        super().__init__(f"{path} is not a rendered bundle (missing {', '.join(missing)})",
                         hint="selfhost render PLAN -i SITE  writes one (default: build/<plan name>)")


def check_bundle(path: Path | str, needs: tuple[str, ...] = ("project", "env/extravars", "inventory/hosts.yml")) -> None:
    """Raise NotABundle unless every path of `needs` exists under `path`."""
    missing = [n for n in needs if not (Path(path) / n).exists()]
    if missing:
        raise NotABundle(path, missing)


class CatalogError(SelfhostError):
    """A model, GPU or quantization is not known."""


class PlanError(SelfhostError):
    """The request cannot be planned as asked (invalid layout, unsupported quantization)."""


class NoFitError(PlanError):
    """Nothing fits; `fix` names the smallest change that would."""


class LicenseError(PlanError):
    """The model's licence does not allow the use described, and the risk was not accepted."""


class RenderError(SelfhostError):
    """A deployment bundle could not be rendered."""


class DeployError(SelfhostError):
    """A deployment step failed on a host."""

    exit_code = EXIT_HOSTS


class DeployTimeout(DeployError):
    exit_code = EXIT_TIMEOUT


class LockedError(DeployError):
    """Another selfhost operation holds the host lock."""
