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
