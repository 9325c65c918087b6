"""The one-line verdict a manager can read: API cheaper / self-host pays back / self-host mandatory /
use the API (prototype scale). Pure arithmetic on monthly figures; no printing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Kind = Literal["self_host_mandatory", "use_api_prototype", "self_host_pays_back", "api_cheaper", "no_volume"]


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    line: str
    break_even_months: float | None = None
    break_even_requests_per_month: float | None = None


@dataclass(frozen=True)
class Figures:
    """Monthly figures for one layout at the user's volume."""

    own_monthly: float  # amortized hardware + power + operations + team
    hardware_usd: float  # purchase price of everything bought
    running_monthly: float  # power + operations + team (what owning costs once the hardware is paid)
    team_monthly: float
    engineers: float
    api: str | None = None
    api_monthly: float | None = None
    requests_per_month: float | None = None
    cloud_monthly: float | None = None
    replica_monthly: float | None = None  # one more replica: amortized hardware + power + operations
    replica_requests_per_month: float | None = None  # what one replica serves within the service level
    data_must_stay: bool = False
    prototype_below: float = 0.0


def _usd(x: float) -> str:
    return f"${x:,.0f}"


def break_even_volume(f: Figures) -> float | None:
    """Smallest monthly volume at which owning (team + whole replicas) costs no more than the API;
    None when even a fully loaded replica costs more than the API charges for its work."""
    if not (f.api_monthly and f.requests_per_month and f.replica_monthly and f.replica_requests_per_month):
        return None
    per_request = f.api_monthly / f.requests_per_month
    margin = per_request * f.replica_requests_per_month - f.replica_monthly  # a full replica's saving
    if margin <= 0:
        return None
    k = max(1, math.ceil(f.team_monthly / margin - 1e-9))
    while True:  # within k replicas volume V ∈ ((k-1)·cap, k·cap]: need V·c ≥ team + k·replica
        v = max((k - 1) * f.replica_requests_per_month, (f.team_monthly + k * f.replica_monthly) / per_request)
        if v <= k * f.replica_requests_per_month:
            return v
        k += 1


def decide(f: Figures) -> Verdict:
    staff = " (staff excluded: --engineers N adds the team)" if not f.engineers else ""
    rent = f"; renting the GPUs in a cloud {_usd(f.cloud_monthly)}/month" if f.cloud_monthly is not None else ""
    if f.data_must_stay:
        return Verdict("self_host_mandatory",
                       f"self-host mandatory: data must stay in network, so the API is not an option; owning costs "
                       f"{_usd(f.own_monthly)}/month{rent}{staff}")
    if f.api_monthly is None:
        return Verdict("no_volume", "no verdict: give --requests-per-month or --requests-per-second to compare with the API")
    if f.api_monthly < f.prototype_below:
        return Verdict("use_api_prototype",
                       f"use the API: {_usd(f.api_monthly)}/month on {f.api} is prototype scale (under "
                       f"{_usd(f.prototype_below)}/month); owning costs {_usd(f.own_monthly)}/month before the time to stand it up")
    if f.own_monthly < f.api_monthly:
        months = f.hardware_usd / (f.api_monthly - f.running_monthly)
        return Verdict("self_host_pays_back",
                       f"self-host pays back in {months:.1f} months: {_usd(f.own_monthly)}/month to own vs "
                       f"{_usd(f.api_monthly)}/month on {f.api}{rent}{staff}",
                       break_even_months=round(months, 1))
    volume = break_even_volume(f)
    when = (f"self-hosting pays from ≈ {float(f'{volume:.3g}'):,.0f} requests/month" if volume is not None
            else "self-hosting does not pay at any volume on this layout (a full replica costs more than the API charges for its work)")
    return Verdict("api_cheaper",
                   f"API cheaper: {_usd(f.api_monthly)}/month on {f.api} vs {_usd(f.own_monthly)}/month to own; {when}{staff}",
                   break_even_requests_per_month=round(volume) if volume is not None else None)
