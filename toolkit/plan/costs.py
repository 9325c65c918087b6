"""Monthly cost of owning the hardware vs paying a closed API at the user's volume."""

from __future__ import annotations

import math
from dataclasses import dataclass

from toolkit.plan.model import Cost
from toolkit.catalog.spec import ApiPrice, GpuSpec

HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class CostAssumptions:
    amortization_months: int = 36
    """Hardware written off over three years."""
    host_share_usd_per_gpu: float = 2500.0
    """Server chassis, CPUs, RAM, NICs and disks per GPU slot."""
    power_usd_per_kwh: float = 0.15
    """Electricity price."""
    pue: float = 1.4
    """Facility overhead on top of the IT load (cooling, power distribution)."""
    average_load: float = 0.6
    """Average GPU power draw as a share of TDP."""
    host_power_w_per_gpu: float = 150.0
    """Host power per GPU slot (CPU, fans, NICs)."""
    operations_usd_per_host_month: float = 400.0
    """Staff time, monitoring, spares, rack space per server."""

    def lines(self) -> list[str]:
        return [
            f"hardware amortized over {self.amortization_months} months (+${self.host_share_usd_per_gpu:,.0f} host share per GPU)",
            f"power ${self.power_usd_per_kwh}/kWh × PUE {self.pue}, GPUs at {self.average_load:.0%} of TDP",
            f"operations ${self.operations_usd_per_host_month:,.0f} per server-month",
        ]


def api_monthly_usd(price: ApiPrice, requests_per_month: int, input_tokens: int, output_tokens: int) -> float:
    per_request = (input_tokens * price.input_per_mtok_usd + output_tokens * price.output_per_mtok_usd) / 1e6
    return requests_per_month * per_request


def monthly_cost(
    gpu: GpuSpec,
    gpus: int,
    *,
    gpus_per_host: int,
    api: ApiPrice | None = None,
    api_usd: float | None = None,
    a: CostAssumptions = CostAssumptions(),
) -> Cost:
    hardware = gpus * (gpu.street_price_usd + a.host_share_usd_per_gpu)
    hosts = math.ceil(gpus / max(1, gpus_per_host))
    watts = gpus * (gpu.tdp_w * a.average_load + a.host_power_w_per_gpu) * a.pue
    parts = {
        "hardware_amortized": hardware / a.amortization_months,
        "power": watts / 1000 * HOURS_PER_MONTH * a.power_usd_per_kwh,
        "operations": hosts * a.operations_usd_per_host_month,
    }
    monthly = sum(parts.values())
    break_even = None
    if api_usd is not None:
        running = parts["power"] + parts["operations"]
        if api_usd > running:
            break_even = round(hardware / (api_usd - running), 1)
    return Cost(
        hardware_usd=round(hardware, 2),
        monthly_usd=round(monthly, 2),
        breakdown={k: round(v, 2) for k, v in parts.items()},
        api=f"{api.provider}/{api.model}" if api else None,
        api_monthly_usd=round(api_usd, 2) if api_usd is not None else None,
        break_even_months=break_even,
        assumptions=a.lines(),
    )
