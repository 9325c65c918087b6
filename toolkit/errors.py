"""The one exception tree. Library code raises these; only `toolkit.cli` turns them into output.

Each error carries what went wrong, what to do about it (`fix`) and the next command (`hint`).
"""

from __future__ import annotations


class SelfhostError(Exception):
    """Base of every error a user can cause or fix."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.hint = hint

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": self.message, "fix": self.fix, "hint": self.hint}


class ConfigError(SelfhostError):
    """A file or option the user gave is malformed (plan.yml, inventory, catalog override)."""


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

    exit_code = 2


class DeployTimeout(DeployError):
    exit_code = 3


class LockedError(DeployError):
    """Another selfhost operation holds the host lock."""
