"""Search GPU × count × TP/PP × quantization for layouts that meet the user's constraints → Plan.

Pure: takes a `PlanRequest`, returns a `PlanResult` (or raises `NoFitError` naming the smallest
change that would fit). Printing and file writing belong to `toolkit.commands.plan`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from toolkit import __version__, catalog
from toolkit.plan.costs import api_monthly_usd, monthly_cost
from toolkit.errors import NoFitError, PlanError
from toolkit.plan.licensing import verdict
from toolkit.plan.model import Cost, Hardware, ModelRef, Performance, Plan, Runtime
from toolkit.sizing import throughput
from toolkit.sizing.engine import GIB, engine_profile
from toolkit.sizing.estimate import Device, Estimate, Settings, estimate
from toolkit.catalog.spec import GpuSpec, QuantSpec
from toolkit.plan.vllm_args import VLLM_VERSION, VllmServeArgs

DEFAULT_CONTEXT = 8192
GPU_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"
CPU_IMAGE = f"selfhost/vllm-cpu:{VLLM_VERSION}"
SECONDS_PER_MONTH = 30 * 86400
PEAK_TO_AVERAGE = 3.0  # traffic peaks are ~3× the monthly average rate
QUALITY_ORDER = ["none", "fp8", "int8", "mxfp4", "gptq-int8", "awq", "gptq", "compressed-tensors", "nvfp4", "bitsandbytes"]


@dataclass
class PlanRequest:
    model: str
    quant: str | None = None
    context: int | None = None
    concurrency: int = 1
    tokens_per_second: float | None = None
    gpus: list[str] = field(default_factory=list)
    gpu_memory_gib: float | None = None
    budget_usd: float | None = None
    requests_per_month: int | None = None
    input_tokens: int = 1000
    output_tokens: int = 300
    commercial: bool = True
    monthly_active_users: int | None = None
    device: str = "gpu"
    cpu_memory_gib: float = 64.0
    cpu_kv_space_gib: float | None = None
    api: str | None = None
    api_prices_file: str | None = None
    name: str | None = None
    # Exact layout (evaluate mode when tp is given)
    tp: int | None = None
    pp: int = 1
    gpu_memory_utilization: float | None = None
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    kv_cache_dtype: str = "auto"
    enforce_eager: bool = False
    vllm_version: str = VLLM_VERSION

    def check(self) -> None:
        """Reject absurd numbers with the field named (the CLI shows this, no traceback)."""
        positives = {
            "--context": self.context,
            "--concurrency": self.concurrency,
            "--tokens-per-second": self.tokens_per_second,
            "--gpu-memory-gib": self.gpu_memory_gib,
            "--tp": self.tp,
            "--pp": self.pp,
            "--max-num-batched-tokens": self.max_num_batched_tokens,
            "--max-num-seqs": self.max_num_seqs,
            "--budget": self.budget_usd,
            "--input-tokens": self.input_tokens,
            "--output-tokens": self.output_tokens,
            "--cpu-memory-gib": self.cpu_memory_gib,
        }
        for flag, value in positives.items():
            if value is not None and value <= 0:
                raise PlanError(f"{flag} must be positive (got {value})")
        limits = {"--context": (self.context, 10_000_000), "--concurrency": (self.concurrency, 1_000_000),
                  "--gpu-memory-gib": (self.gpu_memory_gib, 4096), "--tp": (self.tp, 64), "--pp": (self.pp, 64)}
        for flag, (value, top) in limits.items():
            if value is not None and value > top:
                raise PlanError(f"{flag} {value} is beyond anything plannable (max {top:,})")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise PlanError(f"--gpu-memory-utilization must be in (0, 1] (got {self.gpu_memory_utilization})")
        if self.requests_per_month is not None and self.requests_per_month < 0:
            raise PlanError(f"--requests-per-month must not be negative (got {self.requests_per_month})")
        if self.device not in ("gpu", "cpu"):
            raise PlanError(f"--device must be gpu or cpu (got {self.device})")


@dataclass
class Option:
    """One evaluated layout."""

    gpu: GpuSpec | None
    count: int
    tp: int
    pp: int
    quant: QuantSpec
    est: Estimate
    speed: throughput.Speed
    single: throughput.Speed
    replicas: int = 1
    cost: Cost | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        where = f"{self.count}× {self.gpu.name}" if self.gpu else "CPU"
        layout = f"TP{self.tp}" + (f"·PP{self.pp}" if self.pp > 1 else "")
        reps = f" ×{self.replicas} replicas" if self.replicas > 1 else ""
        return f"{where} {layout} {self.quant.name}{reps}"

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class PlanResult:
    plan: Plan
    options: list[Option]
    rejected: list[Option]
    explain: list = field(default_factory=list)


def _custom_gpu(memory_gib: float) -> GpuSpec:
    # A card we do not know (vGPU slice, new SKU): memory is what matters; speed figures are assumed.
    return GpuSpec(
        name="custom", memory_gib=memory_gib, memory_gb=memory_gib * 1.0737, bandwidth_gbs=1000.0,
        bf16_tflops=150.0, fp8_tflops=None, compute_capability=8.0, interconnect="PCIe 4.0",
        interconnect_gbs=32.0, max_per_node=8, tdp_w=300.0, street_price_usd=0.0,
    )


def _gpu_candidates(req: PlanRequest) -> list[GpuSpec]:
    if req.gpu_memory_gib:
        return [_custom_gpu(req.gpu_memory_gib)]
    if req.gpus:
        return [catalog.gpu(g) for g in req.gpus]
    return [g for g in catalog.gpus() if g.vendor == "nvidia"]


def _quant_candidates(req: PlanRequest, resolved) -> list[QuantSpec]:
    if req.quant:
        wanted = catalog.quant(req.quant)
        if resolved.prequantized and wanted.name != resolved.quant.name:
            raise PlanError(
                f"{resolved.repo_id} is already quantized as {resolved.quant.name}; it cannot be served as {wanted.name}",
                fix=f"drop --quant, or plan the base model {resolved.base_id} with --quant {wanted.name}",
            )
        return [wanted]
    if resolved.prequantized or resolved.quant.name != "none":
        return [resolved.quant]
    return [catalog.quant("none"), catalog.quant("fp8")]


def _layouts(gpu: GpuSpec, req: PlanRequest) -> list[tuple[int, int]]:
    if req.tp:
        return [(req.tp, req.pp)]
    per_node = [n for n in (1, 2, 4, 8) if n <= gpu.max_per_node]
    return [(n, 1) for n in per_node] + [(per_node[-1], 2)]


def _max_num_seqs(req: PlanRequest) -> int | None:
    if req.max_num_seqs:
        return req.max_num_seqs
    if req.tp:  # evaluating an exact layout: vLLM's own default
        return None
    return max(32, 1 << math.ceil(math.log2(max(1, req.concurrency))))


def _settings(req: PlanRequest, context: int) -> Settings:
    return Settings(
        max_model_len=context,
        gpu_memory_utilization=req.gpu_memory_utilization,
        max_num_batched_tokens=req.max_num_batched_tokens,
        max_num_seqs=_max_num_seqs(req),
        kv_cache_dtype=req.kv_cache_dtype,
        enforce_eager=req.enforce_eager,
        cpu_kv_space_gib=req.cpu_kv_space_gib,
    )


def _evaluate(req: PlanRequest, resolved, gpu: GpuSpec | None, tp: int, pp: int, quant: QuantSpec, context: int, api_usd) -> Option:
    spec = resolved.spec
    profile = engine_profile(req.vllm_version)
    settings = _settings(req, context)
    if gpu is None:
        kv_space = req.cpu_kv_space_gib or _cpu_kv_space(spec, req, context)
        settings = Settings(**{**settings.__dict__, "cpu_kv_space_gib": kv_space})
        device = Device(memory_gib=req.cpu_memory_gib, kind="cpu")
    else:
        device = Device(memory_gib=gpu.memory_gib, gpu=gpu)
    exact = resolved.weight_bytes if quant.name == resolved.quant.name else None
    est = estimate(spec, quant, device, settings, tp=tp, pp=pp, profile=profile, exact_weight_bytes=exact)
    mean_ctx = max(1, context // 2)
    batch = max(1, min(req.concurrency, int(est.capacity.max_concurrency) or 1, est.max_num_seqs))
    kwargs = dict(tp=tp, pp=pp, context=mean_ctx, kv_bytes_per_token=est.capacity.kv_bytes_per_token)
    speed = throughput.decode_speed(spec, est.weights, gpu, batch=batch, **kwargs)
    single = throughput.decode_speed(spec, est.weights, gpu, batch=1, **kwargs)
    opt = Option(gpu=gpu, count=tp * pp, tp=tp, pp=pp, quant=quant, est=est, speed=speed, single=single)
    opt.problems = list(est.reasons)
    if est.fits and est.capacity.max_concurrency < req.concurrency:
        opt.problems.append(
            f"KV cache holds {est.capacity.max_concurrency:g} requests of {context} tokens, {req.concurrency} needed"
        )
    if req.tokens_per_second and speed.per_user_tokens_per_s < req.tokens_per_second:
        opt.problems.append(f"{speed.per_user_tokens_per_s:.0f} tokens/s per user < {req.tokens_per_second:g} asked")
    if req.requests_per_month:
        needed = req.requests_per_month * req.output_tokens / SECONDS_PER_MONTH * PEAK_TO_AVERAGE
        opt.replicas = max(1, math.ceil(needed / max(speed.tokens_per_s, 1e-9)))
    if gpu is not None and gpu.street_price_usd > 0:
        api_price, api_cost = api_usd
        opt.cost = monthly_cost(gpu, opt.count * opt.replicas, gpus_per_host=min(opt.count, gpu.max_per_node) if pp == 1 else tp,
                                api=api_price, api_usd=api_cost)
        if req.budget_usd is not None and opt.cost.hardware_usd > req.budget_usd:
            opt.problems.append(f"hardware ${opt.cost.hardware_usd:,.0f} is over the ${req.budget_usd:,.0f} budget")
    return opt


def _cpu_kv_space(spec, req: PlanRequest, context: int) -> float:
    from toolkit.sizing import kv

    per_req = kv.request_bytes(spec, context, tp=1, pp=1, b_kv=kv.kv_dtype_bytes(req.kv_cache_dtype), batched_tokens=2048, block=16)
    return max(1.0, math.ceil(per_req * req.concurrency * 1.25 / GIB))


def _rank_key(o: Option):
    q = QUALITY_ORDER.index(o.quant.name) if o.quant.name in QUALITY_ORDER else len(QUALITY_ORDER)
    monthly = o.cost.monthly_usd if o.cost else o.count
    return (monthly, o.count, q, -o.speed.tokens_per_s)


def _api(req: PlanRequest):
    prices = catalog.api_prices(req.api_prices_file)
    key = req.api or prices.default
    for p in prices.prices:
        if f"{p.provider}/{p.model}".lower() == key.lower() or p.model.lower() == key.lower():
            usd = api_monthly_usd(p, req.requests_per_month, req.input_tokens, req.output_tokens) if req.requests_per_month else None
            return p, usd
    names = ", ".join(f"{p.provider}/{p.model}" for p in prices.prices)
    raise PlanError(f"unknown API '{key}'", fix=f"use --api with one of: {names}")


def plan(req: PlanRequest) -> PlanResult:
    req.check()
    resolved = catalog.resolve_model(req.model)
    spec = resolved.spec
    context = req.context or min(DEFAULT_CONTEXT, spec.max_position_embeddings)
    if context > spec.max_position_embeddings:
        raise PlanError(
            f"--context {context} exceeds {spec.id}'s maximum of {spec.max_position_embeddings} tokens",
            fix=f"use --context {spec.max_position_embeddings} or less",
        )
    api = _api(req) if req.device == "gpu" else (None, None)
    quants = _quant_candidates(req, resolved)
    options: list[Option] = []
    if req.device == "cpu":
        options = [_evaluate(req, resolved, None, 1, 1, q, context, api) for q in quants]
    else:
        for gpu in _gpu_candidates(req):
            for q in quants:
                for tp, pp in _layouts(gpu, req):
                    options.append(_evaluate(req, resolved, gpu, tp, pp, q, context, api))
    good = sorted((o for o in options if o.ok), key=_rank_key)
    bad = [o for o in options if not o.ok]
    if req.tp and not good:
        # Evaluate mode: report the single layout even though it does not fit.
        return PlanResult(plan=_to_plan(req, resolved, bad[0], context), options=[], rejected=bad)
    if not good:
        raise _no_fit(req, resolved, bad, context)
    return PlanResult(plan=_to_plan(req, resolved, good[0], context), options=good, rejected=bad)


def _no_fit(req: PlanRequest, resolved, bad: list[Option], context: int) -> NoFitError:
    """Name the smallest change that would fit, from the closest rejected layouts."""
    fixes = []
    # Only layouts vLLM would accept and whose weights fit can be rescued by a smaller request.
    near = [o for o in bad if o.est.layout_ok and o.est.memory.kv_cache_gib > 0]
    if near:
        longest = max(near, key=lambda o: o.est.capacity.max_model_len_possible)
        possible = longest.est.capacity.max_model_len_possible
        if 256 <= possible < context:
            fixes.append(f"--context {possible} on {longest.label}")
        most = max(near, key=lambda o: o.est.capacity.max_concurrency)
        if 1 <= most.est.capacity.max_concurrency < req.concurrency:
            fixes.append(f"--concurrency {int(most.est.capacity.max_concurrency)} on {most.label}")
    if not req.tp:
        fixes.append("more GPUs: add --gpu with a larger card (see `selfhost gpus`)")
    four_bit = [q for q in ("awq",) if q not in {o.quant.name for o in bad}]
    if four_bit and not resolved.prequantized:
        fixes.append("a 4-bit checkpoint: --quant awq")
    reasons = sorted({p for o in bad for p in o.problems})[:6]
    return NoFitError(
        f"nothing fits {resolved.repo_id} at context {context} with concurrency {req.concurrency}:\n  - " + "\n  - ".join(reasons),
        fix="; or ".join(fixes) if fixes else "relax the constraints",
        hint="selfhost plan MODEL --explain shows where each number comes from",
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "model"


def _load_time_s(o: Option) -> int:
    # Reading weights (~1 GiB/s from local disk) + engine start + profiling and graph capture.
    read = o.est.memory.weights_gib * (1.0 if o.gpu else 2.0)
    graphs = 0 if (o.gpu is None or o.est.memory.cuda_graph_gib == 0) else 60
    return int(max(120, 2 * (read + 60 + graphs)))


def _to_plan(req: PlanRequest, resolved, o: Option, context: int) -> Plan:
    spec = resolved.spec
    served = req.name or _slug(resolved.repo_id.split("/")[-1])
    mount = f"/models/{_slug(resolved.repo_id.split('/')[-1])}"
    cpu = o.gpu is None
    needs_flag = o.quant.kind == "vllm" and not resolved.prequantized
    vllm = VllmServeArgs(
        model=mount,
        served_model_name=served,
        tensor_parallel_size=o.tp,
        pipeline_parallel_size=o.pp,
        max_model_len=context,
        gpu_memory_utilization=None if cpu else o.est.gpu_memory_utilization,
        max_num_seqs=o.est.max_num_seqs,
        max_num_batched_tokens=o.est.max_num_batched_tokens,
        kv_cache_dtype=req.kv_cache_dtype,
        quantization=o.quant.vllm_quantization if needs_flag else None,
        enforce_eager=req.enforce_eager,
    )
    env = {"VLLM_CPU_KVCACHE_SPACE": f"{o.est.memory.kv_cache_gib:g}"} if cpu else {}
    lic = catalog.licenses().get(spec.license) or catalog.licenses()["unknown"]
    warnings = list(o.problems)
    if o.quant.kind == "gguf":
        warnings.append("GGUF in vLLM is experimental and single-file only; prefer llama.cpp or an AWQ/FP8 checkpoint")
    if o.quant.kind == "vllm" and o.quant.name in ("awq", "gptq", "compressed-tensors", "bitsandbytes") and not resolved.prequantized:
        warnings.append(f"{o.quant.name} needs a pre-quantized checkpoint: pass its repo id or local directory as MODEL")
    return Plan(
        toolkit_version=__version__,
        name=req.name or served,
        model=ModelRef(
            id=resolved.repo_id,
            base_id=resolved.base_id,
            source="catalog" if resolved.source in ("catalog", "variant") else resolved.source,
            quantization=o.quant.name,
            served_model_name=served,
            weights_gib=round((resolved.weight_bytes or o.est.weights.total) / GIB, 2),
            max_position_embeddings=spec.max_position_embeddings,
        ),
        hardware=Hardware(
            device="cpu" if cpu else "gpu",
            gpu=None if cpu else o.gpu.name,
            memory_gib=req.cpu_memory_gib if cpu else o.gpu.memory_gib,
            tensor_parallel_size=o.tp,
            pipeline_parallel_size=o.pp,
            gpus_per_replica=0 if cpu else o.count,
            replicas=o.replicas,
        ),
        vllm=vllm,
        runtime=Runtime(vllm_version=req.vllm_version, image=CPU_IMAGE if cpu else GPU_IMAGE, load_time_s=_load_time_s(o), env=env),
        memory=o.est.memory,
        capacity=o.est.capacity,
        performance=Performance(
            decode_tokens_per_s=round(o.single.tokens_per_s, 1),
            aggregate_tokens_per_s=round(o.speed.tokens_per_s, 1),
            per_user_tokens_per_s=round(o.speed.per_user_tokens_per_s, 1),
            at_concurrency=o.speed.batch,
            assumptions=throughput.assumptions(o.gpu, max(1, context // 2)),
        ),
        cost=o.cost,
        license=verdict(spec, lic, commercial=req.commercial, monthly_active_users=req.monthly_active_users),
        warnings=warnings,
    )
