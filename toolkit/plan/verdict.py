"""The one-line verdict a manager can read: API cheaper / self-host pays back / hybrid cheapest /
self-host mandatory / use the API (prototype scale). Pure arithmetic on monthly figures; no printing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Kind = Literal["self_host_mandatory", "use_api_prototype", "self_host_pays_back", "api_cheaper", "hybrid_cheapest",
               "no_volume"]


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
    hybrid_share: float | None = None  # share of requests routed to the API (--routed-out)
    hybrid_monthly: float | None = None  # that share on the API + owning replicas sized for the rest
    hybrid_api_monthly: float | None = None  # the routed share's API bill
    hybrid_replicas: int | None = None  # replicas the local share needs
    hybrid_break_even_months: float | None = None  # hybrid hardware paid back against the API alone


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


def _more_or_less(x: float, than: float, what: str) -> str:
    return f"{_usd(abs(x - than))} {'more' if x > than else 'less'} than {what}"


def _with_hybrid(base: Verdict, f: Figures) -> Verdict:
    """The base verdict, or hybrid when it beats both owning everything and the API alone; either way the
    hybrid figure is in the line. In a linear model routing out never beats both (it costs the API's price per
    request to save the local marginal cost), so hybrid wins only where whole replicas come in steps."""
    if f.hybrid_monthly is None or f.api_monthly is None:
        return base
    pct = f"{f.hybrid_share * 100:g}%"
    if f.hybrid_monthly < min(f.own_monthly, f.api_monthly):
        local = f.hybrid_monthly - (f.hybrid_api_monthly or 0.0)
        back = (f"; pays back in {f.hybrid_break_even_months:g} months against the API alone"
                if f.hybrid_break_even_months is not None else "")
        reps = f.hybrid_replicas or 0
        return Verdict("hybrid_cheapest",
                       f"hybrid cheapest: {pct} of requests to {f.api} {_usd(f.hybrid_api_monthly or 0.0)} + "
                       f"{reps} owned replica{'s' if reps != 1 else ''} for the rest {_usd(local)} = "
                       f"{_usd(f.hybrid_monthly)}/month, vs {_usd(f.own_monthly)} to own everything and "
                       f"{_usd(f.api_monthly)} on the API alone{back}",
                       break_even_months=base.break_even_months,
                       break_even_requests_per_month=base.break_even_requests_per_month)
    line = (f"{base.line}; hybrid ({pct} routed out) {_usd(f.hybrid_monthly)}/month: "
            f"{_more_or_less(f.hybrid_monthly, f.own_monthly, 'owning everything')}, "
            f"{_more_or_less(f.hybrid_monthly, f.api_monthly, 'the API alone')}")
    return Verdict(base.kind, line, base.break_even_months, base.break_even_requests_per_month)


def decide(f: Figures) -> Verdict:
    """The verdict for owning vs the API, with the hybrid (part routed out) weighed in when given."""
    v = _decide(f)
    return v if v.kind in ("self_host_mandatory", "use_api_prototype", "no_volume") else _with_hybrid(v, f)


def _decide(f: Figures) -> Verdict:
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
