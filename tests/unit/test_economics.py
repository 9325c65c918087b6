"""The honest verdict: own vs rent vs API at the user's volume, every assumption overridable."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from toolkit import catalog
from toolkit.errors import ConfigError, PlanError
from toolkit.plan import planner
from toolkit.plan.costs import CostAssumptions, api_monthly_usd, resolve_assumptions
from toolkit.plan.verdict import Figures, break_even_volume, decide

LLAMA3_70B = "meta-llama/Meta-Llama-3-70B-Instruct"


def figures(**kw) -> Figures:
    base = dict(own_monthly=10_000, hardware_usd=120_000, running_monthly=4_000, team_monthly=0, engineers=0,
                api="vendor/model", api_monthly=34_000, requests_per_month=1_000_000, prototype_below=1_000)
    return Figures(**{**base, **kw})


# ---------------------------------------------------------------- verdict branches


def test_pays_back_when_owning_is_cheaper_per_month():
    # $120,000 of hardware, saving $34,000 - $4,000 = $30,000 a month once bought: 4 months.
    v = decide(figures())
    assert v.kind == "self_host_pays_back"
    assert v.break_even_months == pytest.approx(4.0)
    assert v.line.startswith("self-host pays back in 4.0 months")
    assert "staff excluded" in v.line


def test_no_break_even_when_self_hosting_costs_more_per_month():
    v = decide(figures(api_monthly=5_000))
    assert v.kind == "api_cheaper" and v.break_even_months is None
    assert v.line.startswith("API cheaper")


def test_volume_at_which_owning_would_pay():
    # API: $5,000 for 1 M requests = $0.005/request. One replica serves 1 M requests/month for $2,000;
    # team $6,000. k replicas need 0.005·V >= 6,000 + 2,000·k with V <= k·1 M: k = 2, V = 2 M.
    f = figures(api_monthly=5_000, team_monthly=6_000, engineers=0.5, replica_monthly=2_000,
                replica_requests_per_month=1_000_000)
    assert break_even_volume(f) == pytest.approx(2_000_000)
    v = decide(f)
    assert v.break_even_requests_per_month == 2_000_000 and "2,000,000 requests/month" in v.line
    assert "staff excluded" not in v.line


def test_never_pays_when_a_full_replica_costs_more_than_its_work_on_the_api():
    f = figures(api_monthly=5_000, replica_monthly=6_000, replica_requests_per_month=1_000_000)
    assert break_even_volume(f) is None
    assert "any volume" in decide(f).line


def test_data_that_must_stay_makes_self_hosting_mandatory():
    v = decide(figures(api_monthly=None, data_must_stay=True, cloud_monthly=8_000))
    assert v.kind == "self_host_mandatory"
    assert "data must stay in network" in v.line and "not an option" in v.line


def test_prototype_volume_gets_use_the_api():
    v = decide(figures(api_monthly=40, own_monthly=600))
    assert v.kind == "use_api_prototype" and v.line.startswith("use the API")


def test_no_volume_no_verdict():
    assert decide(figures(api_monthly=None, requests_per_month=None)).kind == "no_volume"


# ---------------------------------------------------------------- through the planner


def _plan(**kw):
    return planner.plan(planner.PlanRequest(**kw)).options[0]


def test_api_cost_counts_input_and_output_tokens():
    flash_lite = next(p for p in catalog.api_prices().prices if p.model == "gemini-2.5-flash-lite")
    # The seeds' note: 10 M × (500 in + 1,000 out) on the flash-lite tier ≈ $4.5K/month.
    assert api_monthly_usd(flash_lite, 10_000_000, 500, 1000) == pytest.approx(4_500)
    assert api_monthly_usd(flash_lite, 10_000_000, 500, 0) > 0


def test_case_a_against_the_cheapest_tier_has_no_break_even():
    best = _plan(model=LLAMA3_70B, requests_per_month=10_000_000, input_tokens=500, output_tokens=1000,
                 api="google/gemini-2.5-flash-lite", assumptions=CostAssumptions(engineers=1))
    c = best.cost
    assert c.api_monthly_usd == pytest.approx(4_500)
    assert c.monthly_usd > c.api_monthly_usd
    assert c.break_even_months is None and c.verdict_kind == "api_cheaper"
    assert c.api_reason == "given with --api"


def test_case_c_data_residency():
    best = _plan(model=LLAMA3_70B, requests_per_month=1_000_000, input_tokens=500, output_tokens=500,
                 data_must_stay_in_network=True)
    assert best.cost.verdict_kind == "self_host_mandatory"


def test_case_e_prototype():
    best = _plan(model="meta-llama/Llama-3.1-8B-Instruct", requests_per_month=20_000, input_tokens=1000, output_tokens=300)
    assert best.cost.verdict_kind == "use_api_prototype"


@pytest.mark.parametrize("model,tier", [("meta-llama/Llama-3.1-8B-Instruct", "small"), (LLAMA3_70B, "mid"),
                                        ("deepseek-ai/DeepSeek-R1", "frontier")])
def test_default_api_matches_the_model_tier(model, tier):
    spec = catalog.resolve_model(model).spec
    assert planner.model_tier(spec)[0] == tier
    price, _, reason, as_of = planner._api(planner.PlanRequest(model=model, requests_per_month=1000), spec)
    assert price.tier == tier and tier in reason
    assert as_of == catalog.api_prices().as_of


def test_team_and_cloud_rent_are_in_the_comparison():
    best = _plan(model=LLAMA3_70B, requests_per_month=10_000_000, input_tokens=500, output_tokens=1000,
                 assumptions=CostAssumptions(engineers=2, engineer_cost_usd_month=10_000))
    c = best.cost
    assert c.breakdown["team"] == 20_000
    assert c.cloud_monthly_usd is not None and c.cloud_monthly_usd > 20_000
    assert any("2 engineer" in a for a in c.assumptions)


# ---------------------------------------------------------------- assumptions: file and flags


def test_assumptions_file_then_flags(tmp_path):
    f = tmp_path / "costs.yml"
    f.write_text("pue: 1.2\nengineers: 2\npower_usd_per_kwh: 0.30\n")
    a = resolve_assumptions(f, {"--engineers": 3, "--pue": None})
    assert (a.pue, a.engineers, a.power_usd_per_kwh) == (1.2, 3, 0.30)
    assert a.amortization_months == CostAssumptions().amortization_months


def test_assumptions_file_unknown_key_is_one_line_with_did_you_mean(tmp_path):
    f = tmp_path / "costs.yml"
    f.write_text("peu: 1.2\n")
    with pytest.raises(ConfigError) as exc:
        resolve_assumptions(f)
    assert "unknown key 'peu'" in exc.value.message and "did you mean 'pue'" in exc.value.message
    assert "\n" not in exc.value.message


@pytest.mark.parametrize("flag,value", [("--pue", float("nan")), ("--engineers", -1), ("--power-price", float("inf"))])
def test_bad_flag_values_are_one_line_errors(flag, value):
    with pytest.raises(PlanError) as exc:
        resolve_assumptions(None, {flag: value})
    assert flag in exc.value.message and "\n" not in exc.value.message


def _cli(*args: str):
    import typer

    from toolkit.commands import catalog as catalog_cmds, plan as plan_cmd

    app = typer.Typer()
    plan_cmd.register(app)
    catalog_cmds.register(app)
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("args,needle", [
    (["--pue", "0.5"], "--pue"),
    (["--engineers", "-2"], "--engineers"),
    (["--requests-per-second", "nan"], "--requests-per-second"),
    (["--ttft-p95", "0"], "--ttft-p95"),
])
def test_cli_rejects_bad_values_with_the_flag_named(args, needle):
    res = _cli("plan", "meta-llama/Llama-3.1-8B-Instruct", "--no-write", *args)
    assert res.exit_code != 0
    assert needle in str(res.exception)
    assert "\n" not in getattr(res.exception, "message", "x")


def test_cli_prints_the_verdict_and_assumptions():
    res = _cli("plan", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "L40S", "--no-write",
               "--requests-per-month", "5000000", "--engineers", "1")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "Verdict:" in out and "Little's law" in out
    assert "--amortization-months" in out and "prices as of" in out


def test_apis_command_lists_the_price_list_and_its_date():
    res = _cli("apis")
    assert res.exit_code == 0, res.output
    assert catalog.api_prices().as_of in res.output and "gemini-2.5-flash-lite" in res.output


# ---------------------------------------------------------------- hybrid: part of the traffic routed out


def test_hybrid_worked_example_by_hand():
    """--routed-out 0.25 on 2 M requests/month, the rest on 2 owned GPUs, every figure by hand."""
    from toolkit.catalog.spec import ApiPrice
    from toolkit.plan.costs import hybrid_cost

    # API: 2,000,000 × (1,000 in × $5 + 500 out × $10) / 1M = 2,000,000 × $0.01 = $20,000/month.
    price = ApiPrice(provider="vendor", model="model", input_per_mtok_usd=5, output_per_mtok_usd=10)
    api_usd = api_monthly_usd(price, 2_000_000, 1000, 500)
    assert api_usd == pytest.approx(20_000)
    gpu = catalog.gpu("L40S").model_copy(update={"street_price_usd": 20_000, "tdp_w": 500})
    a = CostAssumptions(amortization_months=25, host_share_usd_per_gpu=5_000, power_usd_per_kwh=0.2, pue=1.0,
                        average_load=1.0, host_power_w_per_gpu=0, operations_usd_per_host_month=500,
                        engineers=1, engineer_cost_usd_month=10_000)
    h = hybrid_cost(gpu, 2, gpus_per_host=8, share=0.25, api="vendor/model", api_usd=api_usd,
                    requests_per_month=2_000_000, replicas=2, gpus_per_replica=1, a=a)
    # Routed out: 0.25 × $20,000 = $5,000. Kept local: 0.75 × 2,000,000 = 1,500,000 requests.
    assert h.api_usd == pytest.approx(5_000) and h.local_requests_per_month == 1_500_000
    # Hardware 2 × ($20,000 + $5,000) = $50,000, ÷ 25 months = $2,000; power 2 × 500 W = 1 kW × 730 h × $0.2
    # = $146; one server $500; one engineer $10,000: local $12,646; hybrid $5,000 + $12,646 = $17,646.
    assert h.hardware_usd == 50_000
    assert h.breakdown == {"hardware_amortized": 2_000, "power": 146, "operations": 500, "team": 10_000}
    assert h.local_monthly_usd == pytest.approx(12_646) and h.monthly_usd == pytest.approx(17_646)
    # Against the API alone it saves $20,000 − ($17,646 − $2,000) = $4,354/month once bought: 50,000 / 4,354 = 11.5.
    assert h.break_even_months == pytest.approx(11.5)
    assert h.how[-1] == "hybrid = $5,000 + $12,646 = $17,646/month"


def test_hybrid_beats_both_only_when_cheaper_than_each():
    f = figures(own_monthly=10_000, api_monthly=10_500, hybrid_share=0.1, hybrid_api_monthly=1_050,
                hybrid_monthly=9_550, hybrid_replicas=3, hybrid_break_even_months=7.0)
    v = decide(f)
    assert v.kind == "hybrid_cheapest"
    assert v.line.startswith("hybrid cheapest: 10% of requests to vendor/model $1,050 + 3 owned replicas for the rest "
                             "$8,500 = $9,550/month, vs $10,000 to own everything and $10,500 on the API alone")
    assert "pays back in 7 months against the API alone" in v.line


def test_hybrid_between_the_two_keeps_the_verdict_and_says_where_it_lies():
    # Owning $10,000 < hybrid $20,000 < API $34,000: self-host still pays back; the line places the hybrid.
    v = decide(figures(hybrid_share=0.3, hybrid_api_monthly=10_200, hybrid_monthly=20_000, hybrid_replicas=1))
    assert v.kind == "self_host_pays_back" and v.break_even_months == pytest.approx(4.0)
    assert v.line.endswith("hybrid (30% routed out) $20,000/month: $10,000 more than owning everything, "
                           "$14,000 less than the API alone")
    # Prototype scale and data that must stay: the hybrid does not enter the verdict.
    assert "hybrid" not in decide(figures(api_monthly=40, own_monthly=600, hybrid_share=0.3, hybrid_monthly=612)).line


def test_hybrid_local_share_is_sized_by_the_capacity_path():
    """The local part is exactly what a plan for (1 − share) of the volume on the same layout costs."""
    kw = dict(model="meta-llama/Llama-3.1-8B-Instruct", gpus=["L40S"], tp=1, quant="fp8", input_tokens=1000,
              output_tokens=300, api="openai/gpt-5-mini", assumptions=CostAssumptions(engineers=1))
    full = _plan(requests_per_month=20_000_000, **kw)
    hybrid = _plan(requests_per_month=20_000_000, routed_out=0.2, **kw)
    local = _plan(requests_per_month=16_000_000, **kw)
    h = hybrid.cost.hybrid
    assert full.cost.hybrid is None and hybrid.replicas == full.replicas  # plan.yml stays sized for the full load
    assert h.replicas == local.replicas < full.replicas
    assert (h.gpus_bought, h.hardware_usd) == (local.cost.gpus_bought, local.cost.hardware_usd)
    assert h.local_monthly_usd == pytest.approx(local.cost.monthly_usd)
    assert h.api_usd == pytest.approx(0.2 * full.cost.api_monthly_usd)
    assert h.monthly_usd == pytest.approx(h.api_usd + h.local_monthly_usd, abs=0.01)
    assert "hybrid (20% routed out)" in hybrid.cost.verdict


def test_no_share_routed_out_is_no_hybrid():
    best = _plan(model="meta-llama/Llama-3.1-8B-Instruct", gpus=["L40S"], requests_per_month=5_000_000, routed_out=0)
    assert best.cost.hybrid is None and "hybrid" not in best.cost.verdict


@pytest.mark.parametrize("args,needle", [
    (["--routed-out", "1", "--requests-per-month", "1000000"], "from 0 up to"),
    (["--routed-out", "-0.1", "--requests-per-month", "1000000"], "from 0 up to"),
    (["--routed-out", "nan", "--requests-per-month", "1000000"], "from 0 up to"),
    (["--routed-out", "0.3", "--requests-per-month", "1000000", "--data-must-stay-in-network"],
     "--data-must-stay-in-network forbids"),
    (["--routed-out", "0.3"], "needs a volume"),
])
def test_cli_refuses_a_bad_share(args, needle):
    res = _cli("plan", "meta-llama/Llama-3.1-8B-Instruct", "--no-write", *args)
    assert res.exit_code != 0
    assert isinstance(res.exception, PlanError) and needle in res.exception.message
    assert "--routed-out" in res.exception.message and "\n" not in res.exception.message


def test_cli_shows_the_hybrid_beside_own_and_api():
    import json

    args = ["plan", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "L40S", "--no-write", "--requests-per-month",
            "20000000", "--routed-out", "0.2", "--api", "openai/gpt-4.1"]
    res = _cli(*args)
    assert res.exit_code == 0, res.output
    assert "hybrid: 20% to the API" in res.output and "Hybrid, the arithmetic:" in res.output
    assert "local share: replicas = " in res.output
    doc = json.loads(_cli(*args, "--json").output)
    h = doc["cost"]["hybrid"]
    assert h["routed_out"] == 0.2 and h["api_usd"] == pytest.approx(0.2 * doc["cost"]["api_monthly_usd"])
    assert h["monthly_usd"] == pytest.approx(h["api_usd"] + h["local_monthly_usd"], abs=0.01)


def test_bench_prints_the_hybrid_where_traffic_may_go_out(capsys, monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "economics.py"
    spec = importlib.util.spec_from_file_location("bench_economics", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_economics", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    assert bench.main(["--case", "C", "--case", "D"]) == 0
    out = capsys.readouterr().out
    d = out[out.index("=== Case D"):]
    assert "hybrid:  20% of requests (the hard ones) to openai/gpt-4.1" in d and "· hybrid = $" in d
    assert "hybrid" not in out[out.index("=== Case C"):out.index("=== Case D")]  # data must stay: no hybrid
