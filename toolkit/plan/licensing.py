"""The licence verdict for the user's situation (commercial or not, monthly active users)."""

from __future__ import annotations

from toolkit.plan.model import LicenseVerdict
from toolkit.catalog.spec import LicenseSpec, ModelSpec


def verdict(model: ModelSpec, lic: LicenseSpec, *, commercial: bool, monthly_active_users: int | None) -> LicenseVerdict:
    problems: list[str] = []
    if commercial and not lic.commercial_use:
        problems.append(f"{lic.name} does not allow commercial use")
    limit = lic.monthly_active_user_limit
    if limit is not None and monthly_active_users is not None and monthly_active_users > limit:
        problems.append(f"above {limit:,} monthly active users {lic.name} requires a separate licence from the licensor")
    duties = []
    if lic.attribution:
        duties.append(lic.attribution)
    if lic.acceptable_use_policy:
        duties.append(f"follow the acceptable-use policy: {lic.acceptable_use_policy}")
    if limit is not None and monthly_active_users is None:
        duties.append(f"stay under {limit:,} monthly active users, or obtain a licence")
    if lic.notes:
        duties.append(lic.notes)
    kind = "OSI-approved" if lic.osi_approved else "not OSI-approved"
    summary = "; ".join(problems) if problems else f"{lic.name} ({kind}): allowed for this use"
    return LicenseVerdict(
        license=lic.name,
        allowed=not problems,
        summary=summary,
        duties=duties,
        openness=model.openness.model_dump(),
    )
