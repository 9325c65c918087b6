"""Monthly cost of owning the hardware vs renting it vs paying a closed API at the user's volume."""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import ConfigDict, Field, ValidationError

from toolkit.errors import ConfigError, PlanError
from toolkit.plan.model import Cost, HybridCost
from toolkit.catalog.spec import ApiPrice, GpuSpec, Strict, validation_error

HOURS_PER_MONTH = 730


class CostAssumptions(Strict):
    """Every figure the cost comparison assumes; each can be set by a flag or `--assumptions FILE`."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)

    amortization_months: float = Field(36, gt=0)
    """Hardware written off over this many months (--amortization-months)."""
    host_share_usd_per_gpu: float = Field(2500.0, ge=0)
    """Server chassis, CPUs, RAM, NICs and disks per GPU slot, USD (--host-share)."""
    power_usd_per_kwh: float = Field(0.15, ge=0)
    """Electricity price, USD/kWh (--power-price)."""
    pue: float = Field(1.4, ge=1)
    """Facility overhead on top of the IT load: cooling, power distribution (--pue)."""
    average_load: float = Field(0.6, ge=0, le=1)
    """Average GPU power draw as a share of TDP."""
    host_power_w_per_gpu: float = Field(150.0, ge=0)
    """Host power per GPU slot (CPU, fans, NICs), W."""
    operations_usd_per_host_month: float = Field(400.0, ge=0)
    """Monitoring, spares, rack space, remote hands per server-month, USD (--ops-per-server)."""
    peak_factor: float = Field(3.0, ge=1)
    """Peak request rate ÷ monthly-average rate (--peak-factor)."""
    engineers: float = Field(0.0, ge=0)
    """Engineers dedicated to running the models (--engineers)."""
    engineer_cost_usd_month: float = Field(15000.0, ge=0)
    """Fully loaded cost of one engineer per month, USD (--engineer-cost)."""
    prototype_below_usd_month: float = Field(1000.0, ge=0)
    """Below this API spend per month the volume is prototype scale: the API wins on time-to-value."""

    def lines(self) -> list[str]:
        staff = (f"team {self.engineers:g} engineer(s) × ${self.engineer_cost_usd_month:,.0f}/month (--engineers, --engineer-cost)"
                 if self.engineers else "team: staff excluded (0 engineers; --engineers N --engineer-cost USD adds them)")
        return [
            f"hardware amortized over {self.amortization_months:g} months (--amortization-months), "
            f"+${self.host_share_usd_per_gpu:,.0f} server share per GPU (--host-share)",
            f"power ${self.power_usd_per_kwh:g}/kWh (--power-price) × PUE {self.pue:g} (--pue), "
            f"GPUs at {self.average_load:.0%} of TDP + {self.host_power_w_per_gpu:g} W host per GPU",
            f"operations ${self.operations_usd_per_host_month:,.0f} per server-month (--ops-per-server)",
            staff,
            f"traffic peaks at {self.peak_factor:g}× the monthly average (--peak-factor)",
            f"cloud rental at the catalog's on-demand $/GPU-hour × {HOURS_PER_MONTH} h/month, plus the same team",
            f"prototype scale: API spend under ${self.prototype_below_usd_month:,.0f}/month",
        ]


FLAGS = {
    "--amortization-months": "amortization_months",
    "--power-price": "power_usd_per_kwh",
    "--pue": "pue",
    "--host-share": "host_share_usd_per_gpu",
    "--ops-per-server": "operations_usd_per_host_month",
    "--peak-factor": "peak_factor",
    "--engineers": "engineers",
    "--engineer-cost": "engineer_cost_usd_month",
}


def resolve_assumptions(path: str | Path | None = None, flags: dict[str, float | None] | None = None) -> CostAssumptions:
    """Defaults, then the YAML file `path`, then the flags given (by flag name); one-line errors."""
    data: dict = {}
    if path is not None:
        from toolkit.catalog.files import SITE_LIMIT, load_yaml  # bounded: size, aliases, regular files only

        if not Path(path).exists():
            raise ConfigError(f"{path}: no such assumptions file", fix="give an existing YAML file")
        loaded = load_yaml(Path(path), limit=SITE_LIMIT, what="assumptions file")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of assumption: value",
                              fix="keys: " + ", ".join(CostAssumptions.model_fields))
        data = dict(loaded or {})
        try:
            CostAssumptions.model_validate(data)
        except ValidationError as exc:
            err = validation_error(exc, CostAssumptions, str(path))
            raise ConfigError(err.message, fix="known keys: " + ", ".join(CostAssumptions.model_fields)) from None
    for flag, value in (flags or {}).items():
        if value is None:
            continue
        if not math.isfinite(value) or value < 0:
            raise PlanError(f"{flag} must be a finite, non-negative number (got {value})")
        data[FLAGS[flag]] = value
    try:
        return CostAssumptions.model_validate(data)
    except ValidationError as exc:
        by_field = {v: k for k, v in FLAGS.items()}
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        raise PlanError(f"{by_field.get(name, name)}: {err['msg']} (got {err.get('input')!r})") from None


def api_monthly_usd(price: ApiPrice, requests_per_month: float, input_tokens: int, output_tokens: int) -> float:
    per_request = (input_tokens * price.input_per_mtok_usd + output_tokens * price.output_per_mtok_usd) / 1e6
    return requests_per_month * per_request


def _owning(gpu: GpuSpec, gpus: int, gpus_per_host: int, a: CostAssumptions) -> tuple[float, dict[str, float]]:
    hardware = gpus * (gpu.street_price_usd + a.host_share_usd_per_gpu)
    hosts = math.ceil(gpus / max(1, gpus_per_host))
    watts = gpus * (gpu.tdp_w * a.average_load + a.host_power_w_per_gpu) * a.pue
    return hardware, {
        "hardware_amortized": hardware / a.amortization_months,
        "power": watts / 1000 * HOURS_PER_MONTH * a.power_usd_per_kwh,
        "operations": hosts * a.operations_usd_per_host_month,
    }


def hybrid_cost(
    gpu: GpuSpec,
    gpus: int,
    *,
    gpus_per_host: int,
    share: float,
    api: str,
    api_usd: float,
    requests_per_month: float,
    replicas: int,
    gpus_per_replica: int,
    a: CostAssumptions = CostAssumptions(),
    sizing_how: list[str] | tuple[str, ...] = (),
) -> HybridCost:
    """`share` of the requests on the API, the rest on `gpus` GPUs sized for (1 − share) of the load.

    API prices are per token, so the routed share costs share × the API's bill at the full volume. The
    local part is owned like the self-host-only layout (amortized hardware, power, operations) and keeps the
    whole team: the router does not make the servers run themselves."""
    hardware, parts = _owning(gpu, gpus, gpus_per_host, a)
    parts["team"] = a.engineers * a.engineer_cost_usd_month
    local = sum(parts.values())
    out = share * api_usd
    total = out + local
    running = total - parts["hardware_amortized"]
    months = hardware / (api_usd - running) if total < api_usd else None
    local_requests = (1 - share) * requests_per_month
    pct = f"{share * 100:g}%"
    how = [
        f"routed out: {pct} × ${api_usd:,.0f}/month on {api} = ${out:,.0f}/month",
        f"kept local: {100 - share * 100:g}% × {requests_per_month:,.0f} = {local_requests:,.0f} requests/month",
        *(f"local share: {step}" for step in sizing_how),
        f"local: {replicas} replica{'s' if replicas > 1 else ''} × {gpus_per_replica} GPU"
        f"{'s' if gpus_per_replica > 1 else ''}, {gpus} bought, own ${local:,.0f}/month = "
        + " + ".join(f"{k.replace('_', ' ')} ${v:,.0f}" for k, v in parts.items()),
        f"hybrid = ${out:,.0f} + ${local:,.0f} = ${total:,.0f}/month",
    ]
    return HybridCost(
        routed_out=share, api_usd=round(out, 2), local_requests_per_month=round(local_requests), replicas=replicas,
        gpus_bought=gpus, hardware_usd=round(hardware, 2), local_monthly_usd=round(local, 2),
        breakdown={k: round(v, 2) for k, v in parts.items()}, monthly_usd=round(total, 2),
        break_even_months=round(months, 1) if months is not None else None, how=how,
    )


def monthly_cost(
    gpu: GpuSpec,
    gpus: int,
    *,
    gpus_per_host: int,
    api: ApiPrice | None = None,
    api_usd: float | None = None,
    a: CostAssumptions = CostAssumptions(),
    requests_per_month: float | None = None,
    replica_gpus: int | None = None,
    replica_requests_per_month: float | None = None,
    data_must_stay: bool = False,
    api_reason: str | None = None,
    prices_as_of: str | None = None,
    purchase_note: str | None = None,
    gpus_needed: int | None = None,
    hybrid: HybridCost | None = None,
) -> Cost:
    """Own (amortized hardware + power + operations + team) vs rent the same GPUs vs the API (vs `hybrid`,
    part routed to the API), and the verdict."""
    from toolkit.plan.verdict import Figures, decide

    hardware, parts = _owning(gpu, gpus, gpus_per_host, a)
    parts["team"] = a.engineers * a.engineer_cost_usd_month
    monthly = sum(parts.values())
    replica_monthly = None
    if replica_gpus:
        _, one = _owning(gpu, replica_gpus, gpus_per_host, a)
        replica_monthly = sum(one.values())
    # Renting: the GPUs the replicas use (no baseboard rounding), the same team; the provider runs the servers.
    rented = gpus_needed or gpus
    cloud = gpu.cloud_hourly_usd * HOURS_PER_MONTH * rented + parts["team"] if gpu.cloud_hourly_usd else None
    api_name = f"{api.provider}/{api.model}" if api else None
    v = decide(Figures(
        own_monthly=monthly, hardware_usd=hardware, running_monthly=monthly - parts["hardware_amortized"],
        team_monthly=parts["team"], engineers=a.engineers, api=api_name,
        api_monthly=None if data_must_stay else api_usd, requests_per_month=requests_per_month,
        cloud_monthly=cloud, replica_monthly=replica_monthly, replica_requests_per_month=replica_requests_per_month,
        data_must_stay=data_must_stay, prototype_below=a.prototype_below_usd_month,
        hybrid_share=hybrid.routed_out if hybrid else None, hybrid_monthly=hybrid.monthly_usd if hybrid else None,
        hybrid_api_monthly=hybrid.api_usd if hybrid else None, hybrid_replicas=hybrid.replicas if hybrid else None,
        hybrid_break_even_months=hybrid.break_even_months if hybrid else None,
    ))
    return Cost(
        hardware_usd=round(hardware, 2),
        gpus_bought=gpus,
        purchase_note=purchase_note,
        monthly_usd=round(monthly, 2),
        breakdown={k: round(v, 2) for k, v in parts.items()},
        cloud_monthly_usd=round(cloud, 2) if cloud is not None else None,
        api=api_name,
        api_reason=api_reason,
        api_prices_as_of=prices_as_of,
        requests_per_month=round(requests_per_month) if requests_per_month else None,
        api_monthly_usd=round(api_usd, 2) if api_usd is not None else None,
        break_even_months=v.break_even_months,
        break_even_requests_per_month=v.break_even_requests_per_month,
        verdict=v.line,
        verdict_kind=v.kind,
        hybrid=hybrid,
        assumptions=a.lines(),
    )
