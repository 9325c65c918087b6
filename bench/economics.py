"""The seed cases A–E (shared/seed-cases.md) through the planner, beside the essays' figures.

    .venv/bin/python bench/economics.py [--case A]

Runs `toolkit.plan.planner.plan` (the Python API, no subprocess) and prints, per case, the tool's
capacity arithmetic, its own / rent / API monthly figures and verdict, next to what the essay said; for the
cases where part of the traffic may go out (A, B, D: not C, whose data must stay, nor E, API-only), the
hybrid of the three-layer stack: a share of hard requests routed to a frontier API (`--routed-out`), the
rest on replicas sized for what is left.
The essays' figures are quoted as they were published; where they disagree with the tool, the tool's
arithmetic is printed so the reader can see which input differs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.plan import planner  # noqa: E402
from toolkit.plan.costs import CostAssumptions, api_monthly_usd  # noqa: E402
from toolkit import catalog  # noqa: E402

LLAMA3_70B = "meta-llama/Meta-Llama-3-70B-Instruct"


@dataclass
class Case:
    key: str
    situation: str
    essay: str
    essay_verdict: str
    request: dict
    assumptions: dict = field(default_factory=dict)
    also_compare: list[str] = field(default_factory=list)
    one_off_usd: tuple[float, float] | None = None  # costs the tool does not price (fine-tuning), added by hand
    hybrid: tuple[float, str] | None = None  # (share routed out, the API it goes to): `--routed-out S --api API`


CASES = [
    Case("A", "startup, 10 M requests/month, 500 in / 1,000 out, Llama 3 70B",
         "API (a Claude Sonnet tier) ≈ $4,500/month; self-host ≈ $3K capex amortized + $2,500/month compute + $500/month ops",
         "break-even ≈ 3 months, yet most startups stay on the API",
         dict(model=LLAMA3_70B, requests_per_month=10_000_000, input_tokens=500, output_tokens=1000),
         also_compare=["anthropic/claude-sonnet-4-5", "google/gemini-2.5-flash-lite"],
         hybrid=(0.3, "anthropic/claude-sonnet-4-5")),
    Case("B", "mid-size company, 100 M requests/month (500 in / 1,000 out assumed), team of 2.5 engineers",
         "API ≈ $45K/month; self-host ≈ $15K capex + $18K/month compute + $5K/month ops + $30K/month team",
         "structural savings, but net-net 'depends on the exact case'",
         dict(model=LLAMA3_70B, requests_per_month=100_000_000, input_tokens=500, output_tokens=1000),
         assumptions=dict(engineers=2.5, engineer_cost_usd_month=12_000),
         also_compare=["anthropic/claude-sonnet-4-5", "google/gemini-2.5-flash-lite"],
         hybrid=(0.2, "anthropic/claude-sonnet-4-5")),
    Case("C", "Fortune-500, strict data residency (20 M requests/month, 1,000 in / 500 out assumed), team of 3",
         "—", "the API is not legally viable: on-premise open model is mandatory, cost secondary",
         dict(model="meta-llama/Llama-3.3-70B-Instruct", requests_per_month=20_000_000, input_tokens=1000,
              output_tokens=500, data_must_stay_in_network=True),
         assumptions=dict(engineers=3)),
    Case("D", "domain fine-tune (Qwen2.5 7B), 5 M requests/month, 1,500 in / 300 out assumed",
         "customizing an open model ≈ $50K–$200K in compute and expertise",
         "when the domain is central to the product, a fine-tuned open model wins structurally",
         dict(model="Qwen/Qwen2.5-7B-Instruct", requests_per_month=5_000_000, input_tokens=1500, output_tokens=300),
         assumptions=dict(engineers=1), one_off_usd=(50_000, 200_000),
         also_compare=["openai/gpt-4.1", "anthropic/claude-sonnet-4-5"],
         hybrid=(0.2, "openai/gpt-4.1")),
    Case("E", "rapid prototype / MVP: 20 k requests/month, 1,000 in / 300 out, Llama 3.1 8B",
         "—", "the API wins on time-to-value; standing up infrastructure to test an idea is an anti-pattern",
         dict(model="meta-llama/Llama-3.1-8B-Instruct", requests_per_month=20_000, input_tokens=1000, output_tokens=300)),
]


def run(case: Case) -> dict:
    req = planner.PlanRequest(**case.request, assumptions=CostAssumptions(**case.assumptions))
    result = planner.plan(req)
    best = result.options[0]
    c, s = best.cost, best.sizing
    print(f"\n=== Case {case.key}: {case.situation}")
    print(f"essay:   {case.essay}")
    print(f"         verdict: {case.essay_verdict}")
    print(f"tool:    {best.label} — {c.gpus_bought} GPUs bought" + (f" ({c.purchase_note})" if c.purchase_note else ""))
    for step in s.how:
        print(f"         · {step}")
    parts = " + ".join(f"{k.replace('_', ' ')} ${v:,.0f}" for k, v in c.breakdown.items())
    print(f"         own   ${c.monthly_usd:>10,.0f}/month = {parts}  (hardware ${c.hardware_usd:,.0f})")
    if c.cloud_monthly_usd is not None:
        print(f"         rent  ${c.cloud_monthly_usd:>10,.0f}/month (the GPUs the replicas use, on-demand cloud, + team)")
    if c.api_monthly_usd is not None:
        print(f"         API   ${c.api_monthly_usd:>10,.0f}/month on {c.api} ({c.api_reason}; prices {c.api_prices_as_of})")
    prices = catalog.api_prices()
    for name in case.also_compare:
        p = next(p for p in prices.prices if f"{p.provider}/{p.model}" == name)
        usd = api_monthly_usd(p, req.requests_per_month, req.input_tokens, req.output_tokens)
        print(f"         API   ${usd:>10,.0f}/month on {name} = {req.requests_per_month:,} × ({req.input_tokens} × "
              f"${p.input_per_mtok_usd:g} + {req.output_tokens} × ${p.output_per_mtok_usd:g}) / 1M")
    print(f"verdict: {c.verdict}")
    if case.one_off_usd and c.api_monthly_usd is not None:
        saving = c.api_monthly_usd - (c.monthly_usd - c.breakdown["hardware_amortized"])
        lo, hi = case.one_off_usd
        if saving > 0:
            print(f"         + the essay's one-off ${lo:,.0f}–${hi:,.0f} fine-tune (not priced by the tool): pays back in "
                  f"{(c.hardware_usd + lo) / saving:.1f}–{(c.hardware_usd + hi) / saving:.1f} months at ${saving:,.0f}/month saved")
        else:
            print(f"         + the essay's one-off ${lo:,.0f}–${hi:,.0f} fine-tune (not priced by the tool): never pays back on cost alone")
    hybrid = run_hybrid(case) if case.hybrid else None
    return {"case": case.key, "gpus": c.gpus_bought, "replicas": best.replicas, "own": c.monthly_usd,
            "api": c.api_monthly_usd, "verdict": c.verdict_kind, "break_even_months": c.break_even_months,
            "hybrid": hybrid}


def run_hybrid(case: Case) -> float:
    """The same case with `--routed-out SHARE --api API`: the hard share to a frontier API, the rest owned."""
    share, api = case.hybrid
    req = planner.PlanRequest(**{**case.request, "api": api}, routed_out=share,
                              assumptions=CostAssumptions(**case.assumptions))
    c = planner.plan(req).options[0].cost
    h = c.hybrid
    print(f"hybrid:  {share * 100:g}% of requests (the hard ones) to {c.api}, the rest on {h.replicas} owned "
          f"replica{'s' if h.replicas != 1 else ''} (--routed-out {share:g} --api {api})")
    for step in h.how:
        print(f"         · {step}")
    print(f"         hybrid ${h.monthly_usd:>10,.0f}/month vs own all ${c.monthly_usd:,.0f}, API alone ${c.api_monthly_usd:,.0f}"
          + (f"; pays back in {h.break_even_months:g} months against the API alone" if h.break_even_months else ""))
    print(f"         verdict: {c.verdict}")
    return h.monthly_usd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", help="run only these cases (A–E)")
    args = ap.parse_args(argv)
    rows = [run(c) for c in CASES if not args.case or c.key in [k.upper() for k in args.case]]
    print("\ncase  GPUs  replicas  own $/month  API $/month  hybrid $/month  verdict               break-even")
    for r in rows:
        api = f"{r['api']:,.0f}" if r["api"] is not None else "—"
        hybrid = f"{r['hybrid']:,.0f}" if r["hybrid"] is not None else "—"
        be = f"{r['break_even_months']:g} months" if r["break_even_months"] else "—"
        print(f"{r['case']:<5} {r['gpus']:>4}  {r['replicas']:>8}  {r['own']:>11,.0f}  {api:>11}  {hybrid:>14}  "
              f"{r['verdict']:<21} {be}")
    print("(hybrid: the case's share to its frontier API, priced at that API; API $/month: the planner's default API)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
