"""The `selfhost plan --json` document: a stable, schema-documented shape built from planner results."""

from __future__ import annotations

from toolkit.plan.model import Cost, LicenseVerdict, Performance, Plan
from toolkit.sizing.results import Capacity, Explanation, MemoryBreakdown
from toolkit.catalog.spec import Strict


class Layout(Strict):
    gpu: str | None
    """GPU SKU (None on CPU)."""
    gpus: int
    """GPUs per replica."""
    tensor_parallel_size: int
    """TP size."""
    pipeline_parallel_size: int
    """PP size."""
    quantization: str
    """Weight format."""
    replicas: int
    """Copies of the server needed for the stated volume."""


class SizingReport(Strict):
    """How the replica count was derived from the workload."""

    rate_per_s: float | None
    """Peak requests per second (None: sized for --concurrency, no volume given)."""
    in_flight: float
    """Requests being served at once at peak (Little's law: rate × (TTFT + output tokens × TPOT))."""
    batch_per_replica: int
    """Sequences one replica runs at once within the service level and its KV cache."""
    replicas: int
    """Copies of the server needed."""
    per_user_tokens_per_s: float
    """Streaming speed each user sees at that batch (prefill included)."""
    ttft_s: float
    """Mean time to first token at that batch, seconds."""
    limited_by: str
    """What bounds the batch: service level, KV cache, max_num_seqs or --concurrency."""
    how: list[str]
    """The arithmetic, one line per step."""


def sizing_report(o) -> SizingReport | None:
    s = getattr(o, "sizing", None)
    if s is None:
        return None
    return SizingReport(
        rate_per_s=round(s.rate_per_s, 3) if s.rate_per_s is not None else None, in_flight=round(s.in_flight, 1),
        batch_per_replica=s.batch_per_replica, replicas=s.replicas, per_user_tokens_per_s=round(s.per_user_tokens_per_s, 1),
        ttft_s=round(s.ttft_s, 3), limited_by=s.limited_by, how=list(s.how),
    )


class OptionReport(Strict):
    label: str
    """One-line description of the layout."""
    layout: Layout
    """Where and how it runs."""
    fits: bool
    """Meets every constraint."""
    reasons: list[str]
    """Why not, when it does not fit."""
    per_gpu: MemoryBreakdown
    """Memory budget of one GPU, GiB."""
    kv_cache_tokens: int
    """Tokens the KV pool holds."""
    max_concurrency: float
    """Full-length requests that fit at once."""
    max_model_len: int
    """Context configured."""
    max_model_len_possible: int
    """Longest context one request could have."""
    decode_tokens_per_s: float
    """Single-stream decode speed."""
    aggregate_tokens_per_s: float
    """Throughput at the requested concurrency."""
    monthly_usd: float | None
    """Monthly cost of owning the hardware."""


class PlanReport(Strict):
    """What `selfhost plan --json` prints."""

    fits: bool
    """The best option meets every constraint."""
    reasons: list[str]
    """Why the evaluated layout does not fit (empty when it does)."""
    model: str
    """Model served."""
    vllm_version: str
    """vLLM release whose defaults are modelled."""
    quantization: str
    """Weight format of the chosen layout."""
    quantization_quality: str
    """Plain statement of what that format costs in accuracy."""
    per_gpu: MemoryBreakdown
    """Memory budget of one GPU of the chosen layout, GiB."""
    kv_cache_tokens: int
    """KV-cache capacity in tokens."""
    max_concurrency: float
    """Full-length requests that fit at once."""
    capacity: Capacity
    """Context and concurrency figures."""
    performance: Performance
    """Speed estimate and its assumptions."""
    sizing: SizingReport | None = None
    """How replicas were derived from the workload (volume, service level, KV cache)."""
    cost: Cost | None
    """Own vs rent vs API per month, break-even and the verdict."""
    license: LicenseVerdict
    """Licence verdict."""
    vllm_argv: list[str]
    """Exact `vllm serve` arguments."""
    options: list[OptionReport]
    """Ranked options that fit (search mode)."""
    rejected: int
    """Layouts evaluated and rejected."""
    warnings: list[str]
    """Read before buying."""
    explain: list[Explanation] = []
    """Where each number came from (with --explain)."""


def option_report(o) -> OptionReport:
    e = o.est
    return OptionReport(
        label=o.label,
        layout=Layout(
            gpu=o.gpu.name if o.gpu else None, gpus=o.count if o.gpu else 0, tensor_parallel_size=o.tp,
            pipeline_parallel_size=o.pp, quantization=o.quant.name, replicas=o.replicas,
        ),
        fits=o.ok,
        reasons=o.problems,
        per_gpu=e.memory,
        kv_cache_tokens=e.capacity.kv_cache_tokens,
        max_concurrency=e.capacity.max_concurrency,
        max_model_len=e.capacity.max_model_len,
        max_model_len_possible=e.capacity.max_model_len_possible,
        decode_tokens_per_s=round(o.single.tokens_per_s, 1),
        aggregate_tokens_per_s=round(o.speed.tokens_per_s, 1),
        monthly_usd=o.cost.monthly_usd if o.cost else None,
    )


def plan_report(plan: Plan, chosen, options: list, rejected: list, *, fits: bool, explain=()) -> PlanReport:
    return PlanReport(
        fits=fits,
        reasons=chosen.problems,
        model=plan.model.id,
        vllm_version=plan.runtime.vllm_version,
        quantization=chosen.quant.name,
        quantization_quality=chosen.quant.quality.strip(),
        per_gpu=plan.memory,
        kv_cache_tokens=plan.capacity.kv_cache_tokens,
        max_concurrency=plan.capacity.max_concurrency,
        capacity=plan.capacity,
        performance=plan.performance,
        sizing=sizing_report(chosen),
        cost=plan.cost,
        license=plan.license,
        vllm_argv=plan.vllm.to_argv(),
        options=[option_report(o) for o in options],
        rejected=len(rejected),
        warnings=plan.warnings,
        explain=list(explain),
    )
