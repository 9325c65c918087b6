"""The licence verdict for the user's situation (commercial or not, monthly active users)."""

from __future__ import annotations

from toolkit.plan.model import LicenseVerdict
from toolkit.catalog.spec import LicenseSpec, ModelSpec


def verdict(model: ModelSpec, lic: LicenseSpec, *, commercial: bool, monthly_active_users: int | None,
            accept_risk: bool = False) -> LicenseVerdict:
    """Is the use described allowed? `monthly_active_users` is the licence's MAU figure: for a licence whose
    limit is assessed on a date (Llama: the version's release date) it is the MAU on that date, otherwise
    the current MAU. `accept_risk` records `--accept-license-risk` when the use is not allowed."""
    problems: list[str] = []
    if commercial and not lic.commercial_use:
        if lic.id == "unknown":
            problems.append("licence unknown (not in the catalog), so commercial use cannot be confirmed — check the model card")
        else:
            problems.append(f"{lic.name} does not allow commercial use")
    limit = lic.monthly_active_user_limit
    over = limit is not None and monthly_active_users is not None and monthly_active_users > limit
    if over and lic.mau_measured_at:
        problems.append(
            f"{monthly_active_users:,} monthly active users on {lic.mau_measured_at} (the version's release date) "
            f"is above {lic.name}'s {limit:,}: a separate licence from the licensor is required"
        )
    elif over:
        problems.append(f"above {limit:,} monthly active users {lic.name} requires a separate licence from the licensor")
    duties = []
    if lic.attribution:
        duties.append(lic.attribution)
    if lic.acceptable_use_policy:
        duties.append(f"follow the acceptable-use policy: {lic.acceptable_use_policy}")
    if limit is not None and lic.mau_measured_at:
        duties.append(_dated_mau_duty(lic, limit, monthly_active_users))
    elif limit is not None and monthly_active_users is None:
        duties.append(f"stay under {limit:,} monthly active users, or obtain a licence")
    if lic.notes:
        duties.append(lic.notes)
    kind = "OSI-approved" if lic.osi_approved else "not OSI-approved"
    summary = "; ".join(problems) if problems else f"{lic.name} ({kind}): allowed for this use"
    if problems and accept_risk:
        summary += " (risk accepted with --accept-license-risk)"
    return LicenseVerdict(
        license=lic.name,
        allowed=not problems,
        summary=summary,
        duties=duties,
        openness=model.openness.model_dump(),
        risk_accepted=bool(problems) and accept_risk,
    )


def _dated_mau_duty(lic: LicenseSpec, limit: int, mau: int | None) -> str:
    """The MAU clause of a licence that tests it once, on the version's release date (Llama 2 … 4)."""
    clause = (
        f"MAU clause: the {limit:,} monthly-active-user limit is assessed once, on {lic.mau_measured_at} "
        "(the version's release date); it is not an ongoing cap"
    )
    if mau is None:
        return clause + (
            ": if your products had more than that many users then, you need a separate licence from the licensor "
            "(give --monthly-active-users to check)"
        )
    if mau <= limit:
        return clause + f": {mau:,} users then is under it, and later growth does not trigger it"
    return clause
