"""Search GPU × count × TP/PP × quantization for layouts that meet the user's constraints → Plan.

Pure: takes a `PlanRequest`, returns a `PlanResult` (or raises `NoFitError` naming the smallest
change that would fit). Printing and file writing belong to `toolkit.commands.plan`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from toolkit import __version__, catalog
from toolkit.plan import capacity
from toolkit.plan.costs import CostAssumptions, api_monthly_usd, hybrid_cost, monthly_cost
from toolkit.errors import NoFitError, PlanError
from toolkit.plan.licensing import verdict
from toolkit.plan.model import AdapterRef, Cost, Hardware, ModelRef, Performance, Plan, Runtime
from toolkit.sizing import throughput
from toolkit.sizing.engine import GIB, check_version, engine_profile
from toolkit.sizing.estimate import Device, Estimate, Settings, estimate
from toolkit.sizing.lora import LoraSettings
from toolkit.catalog.spec import GpuSpec, QuantSpec
from toolkit.plan.vllm_args import KNOBS, VLLM_VERSION, VllmServeArgs

DEFAULT_CONTEXT = 8192
GPU_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"
CPU_IMAGE = f"selfhost/vllm-cpu:{VLLM_VERSION}"
SECONDS_PER_MONTH = capacity.SECONDS_PER_MONTH
QUALITY_ORDER = ["none", "fp8", "int8", "mxfp4", "gptq-int8", "awq", "gptq", "compressed-tensors", "nvfp4", "bitsandbytes"]


@dataclass
class PlanRequest:
    model: str
    quant: str | None = None
    context: int | None = None
    concurrency: int | None = None  # override; default: derived from the volume, else 1 user
    tokens_per_second: float | None = None
    gpus: list[str] = field(default_factory=list)
    gpu_memory_gib: float | None = None
    budget_usd: float | None = None
    requests_per_month: int | None = None
    requests_per_second: float | None = None  # at peak
    ttft_p95_s: float | None = None
    input_tokens: int = 1000
    output_tokens: int = 300
    commercial: bool = True
    monthly_active_users: int | None = None
    device: str = "gpu"
    cpu_memory_gib: float = 64.0
    cpu_kv_space_gib: float | None = None
    api: str | None = None
    api_prices_file: str | None = None
    data_must_stay_in_network: bool = False
    routed_out: float | None = None
    """Share of requests the router may send to the closed API (--routed-out): adds the hybrid cost."""
    assumptions: CostAssumptions = field(default_factory=CostAssumptions)
    name: str | None = None
    # Exact layout (evaluate mode when tp is given)
    tp: int | None = None
    pp: int = 1
    # Engine knobs: declared (type, default, help) in vllm_args.KNOBS; these fields carry the user's values.
    gpu_memory_utilization: float | None = KNOBS["gpu_memory_utilization"].default
    max_num_batched_tokens: int | None = KNOBS["max_num_batched_tokens"].default
    max_num_seqs: int | None = KNOBS["max_num_seqs"].default
    kv_cache_dtype: str = KNOBS["kv_cache_dtype"].default
    enforce_eager: bool = KNOBS["enforce_eager"].default
    vllm_version: str = VLLM_VERSION
    accept_license_risk: bool = False
    loras: list[tuple[str, str]] = field(default_factory=list)
    """`--lora NAME=PATH`: local adapter directories to serve beside the model."""
    max_loras: int | None = None
    max_lora_rank: int | None = None
    max_cpu_loras: int | None = None
    adapters: list = field(default_factory=list, init=False, repr=False)
    """Checked adapters (toolkit.catalog.adapters.Adapter), filled by plan()."""
    lora: LoraSettings | None = field(default=None, init=False, repr=False)
    """LoRA settings the estimate uses, filled by plan()."""

    @property
    def users(self) -> int:
        """Concurrent requests to size for when no volume is given."""
        return self.concurrency or 1

    def workload(self) -> capacity.Workload:
        return capacity.Workload(
            requests_per_month=self.requests_per_month, requests_per_second=self.requests_per_second,
            peak_factor=self.assumptions.peak_factor, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
            tokens_per_second=self.tokens_per_second, ttft_p95_s=self.ttft_p95_s, concurrency=self.concurrency,
        )

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
            "--requests-per-second": self.requests_per_second,
            "--ttft-p95": self.ttft_p95_s,
            "--input-tokens": self.input_tokens,
            "--output-tokens": self.output_tokens,
            "--cpu-memory-gib": self.cpu_memory_gib,
        }
        for flag, value in positives.items():
            if value is not None and not math.isfinite(value):
                raise PlanError(f"{flag} must be a finite number (got {value})")
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
        self._check_sense()
        self._check_routed_out()
        self.vllm_version = check_version(self.vllm_version)

    def _check_routed_out(self) -> None:
        """A share in [0, 1), and only where requests may leave and there is an API bill to split."""
        share = self.routed_out
        if share is None:
            return
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not math.isfinite(share) or not 0 <= share < 1:
            raise PlanError(f"--routed-out must be a share from 0 up to (not including) 1 (got {share!r:.20})",
                            fix="e.g. --routed-out 0.3 for 30% of requests to the API")
        if share == 0:
            return
        if self.data_must_stay_in_network:
            raise PlanError(f"--routed-out {share:g} sends requests to the API, which --data-must-stay-in-network forbids",
                            fix="the share for data that must stay is 0: drop --routed-out or --data-must-stay-in-network")
        if self.device != "gpu":
            raise PlanError("--routed-out needs the cost comparison, which --device cpu does not make")
        if not self.workload().has_volume:
            raise PlanError("--routed-out needs a volume to split",
                            fix="add --requests-per-month N or --requests-per-second R")

    def _check_sense(self) -> None:
        """Every number finite and within sense, the name a valid one: one PlanError line each, input cut short."""
        from toolkit.catalog.files import excerpt
        from toolkit.plan.validate import NAME_RE

        bounds = {  # flag: (value, lowest, highest)
            "--context": (self.context, 16, 10_000_000),
            "--concurrency": (self.concurrency, 1, 1_000_000),
            "--tokens-per-second": (self.tokens_per_second, None, 1e6),
            "--gpu-memory-gib": (self.gpu_memory_gib, 0.5, 4096),
            "--budget": (self.budget_usd, None, 1e12),
            "--requests-per-month": (self.requests_per_month, 0, 1e12),
            "--monthly-active-users": (self.monthly_active_users, 0, 1e11),
            "--input-tokens": (self.input_tokens, 1, 10_000_000),
            "--output-tokens": (self.output_tokens, 1, 10_000_000),
            "--cpu-memory-gib": (self.cpu_memory_gib, 1, 65536),
            "--cpu-kv-space-gib": (self.cpu_kv_space_gib, 0.1, 65536),
            "--max-num-seqs": (self.max_num_seqs, 1, 65536),
            "--max-num-batched-tokens": (self.max_num_batched_tokens, 1, 1 << 24),
        }
        for flag, (value, lo, hi) in bounds.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise PlanError(f"{flag} must be a finite number (got {excerpt(value)})")
            if lo is not None and value < lo:
                raise PlanError(f"{flag} must be at least {lo:g} (got {excerpt(value)})")
            if value > hi:
                raise PlanError(f"{flag} {excerpt(value)} is beyond anything plannable (max {hi:,.0f})")
        if self.name is not None and not NAME_RE.match(self.name):
            raise PlanError(f"--name {excerpt(self.name)} is not a valid name",
                            fix="use lower-case letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)")


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
    saturation: throughput.Speed | None = None
    replicas: int = 1
    cost: Cost | None = None
    problems: list[str] = field(default_factory=list)
    sizing: capacity.ReplicaSizing | None = None

    @property
    def hosts(self) -> int:
        """Hosts one replica spans (see `hosts_per_replica`)."""
        return hosts_per_replica(self.gpu, self.tp, self.pp)

    @property
    def label(self) -> str:
        where = f"{self.count}× {self.gpu.name}" if self.gpu else "CPU"
        layout = f"TP{self.tp}" + (f"·PP{self.pp}" if self.pp > 1 else "")
        span = f" over {self.hosts} hosts" if self.hosts > 1 else ""
        reps = f" ×{self.replicas} replicas" if self.replicas > 1 else ""
        return f"{where} {layout}{span} {self.quant.name}{reps}"

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class PlanResult:
    plan: Plan
    options: list[Option]
    rejected: list[Option]


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


def _weights_for(req: PlanRequest, resolved):
    """The checkpoint to serve for `--quant`: a format vLLM cannot produce at load time needs weights already in it.

    fp8 and bitsandbytes are quantized online (`--quantization`); AWQ/GPTQ/W4A16/INT8/FP4/GGUF are not, so a
    bf16 base resolves to the published pre-quantized repo the catalog lists, or the request is refused.
    """
    if not req.quant or resolved.prequantized:
        return resolved
    wanted = catalog.quant(req.quant)
    if wanted.name == resolved.quant.name or (wanted.kind == "vllm" and wanted.vllm_quantization):
        return resolved
    from toolkit.catalog.resolve import prequantized_repo

    repo = prequantized_repo(resolved.base_id, wanted.name) if resolved.source in ("catalog", "variant") else None
    if repo is not None:
        return catalog.resolve_model(repo)
    raise PlanError(
        f"{resolved.repo_id} holds no {wanted.name} weights, and vLLM cannot quantize to {wanted.name} at load time",
        fix="pass a pre-quantized repo id or local directory as MODEL, or --quant fp8 (quantized online by vLLM)",
    )


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


def hosts_per_replica(gpu: GpuSpec | None, tp: int, pp: int) -> int:
    """Hosts one replica needs. Tensor parallel all-reduces twice per layer, so it stays on one host's
    NVLink/PCIe; pipeline stages exchange one activation per step and go across hosts. On the CPU
    backend every pipeline stage is a host of its own."""
    if gpu is None:
        return max(1, pp)
    return max(1, math.ceil(tp * pp / gpu.max_per_node))


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
    if req.workload().has_volume and not req.concurrency:  # the batch is derived from the volume: vLLM's default
        return None
    return max(32, 1 << math.ceil(math.log2(req.users)))


def _settings(req: PlanRequest, context: int) -> Settings:
    return Settings(
        max_model_len=context,
        gpu_memory_utilization=req.gpu_memory_utilization,
        max_num_batched_tokens=req.max_num_batched_tokens,
        max_num_seqs=_max_num_seqs(req),
        kv_cache_dtype=req.kv_cache_dtype,
        enforce_eager=req.enforce_eager,
        cpu_kv_space_gib=req.cpu_kv_space_gib,
        lora=req.lora,
    )


ADAPTER_MOUNT = "/adapters"
"""Where adapters appear inside the server container (one read-only directory each)."""


def _check_lora(req: PlanRequest, resolved) -> None:
    """Check every --lora adapter against the model and fill req.adapters / req.lora (one-line errors)."""
    from toolkit.catalog import adapters as lora_files

    flags = {"--max-loras": req.max_loras, "--max-lora-rank": req.max_lora_rank, "--max-cpu-loras": req.max_cpu_loras}
    if not req.loras:
        given = [f for f, v in flags.items() if v is not None]
        if given:
            raise PlanError(f"{given[0]} needs at least one --lora NAME=PATH")
        return
    for flag, value in flags.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096):
            raise PlanError(f"{flag} must be a whole number from 1 to 4096 (got {value})")
    if req.max_lora_rank is not None and req.max_lora_rank not in lora_files.ALLOWED_RANKS:
        raise PlanError(f"--max-lora-rank {req.max_lora_rank} is not a value vLLM accepts",
                        fix=f"use one of {', '.join(map(str, lora_files.ALLOWED_RANKS))}")
    max_loras = req.max_loras or lora_files.DEFAULT_MAX_LORAS
    if req.max_cpu_loras is not None and req.max_cpu_loras < max_loras:
        raise PlanError(f"--max-cpu-loras {req.max_cpu_loras} is below --max-loras {max_loras} (vLLM refuses it)",
                        fix=f"use --max-cpu-loras {max_loras} or more")
    lora_files.lora_layout(resolved.spec)  # unsupported architecture: refused before any file is read
    accepted = [resolved.repo_id, resolved.base_id, *_config_names(resolved)]
    seen: set[str] = set()
    checked = []
    for name, path in req.loras:
        if name in seen:
            raise PlanError(f"--lora {name}: the name is given twice", fix="give each adapter its own name")
        seen.add(name)
        checked.append(lora_files.check_adapter(name, path, resolved.spec, accepted, max_lora_rank=req.max_lora_rank))
    rank = req.max_lora_rank or lora_files.round_rank(max(a.rank for a in checked))
    req.adapters = checked
    req.lora = LoraSettings(max_loras=max_loras, max_lora_rank=rank, max_cpu_loras=req.max_cpu_loras,
                            adapter_bytes=max(a.tensor_bytes for a in checked))


def _lora_args(req: PlanRequest) -> dict:
    """VllmServeArgs fields for LoRA: absolute container paths, the rank and slots the memory was planned for."""
    if not req.lora:
        return {}
    return {"enable_lora": True, "lora_modules": [f"{a.name}={ADAPTER_MOUNT}/{a.name}" for a in req.adapters],
            "max_loras": req.lora.max_loras, "max_lora_rank": req.lora.max_lora_rank,
            "max_cpu_loras": req.lora.max_cpu_loras}


def _lora_notes(req: PlanRequest, o: Option) -> list[str]:
    if not req.lora or o.est.lora is None:
        return []
    mem, s = o.est.lora, req.lora
    where = "host RAM (CPU backend)" if o.gpu is None else "per GPU, out of the KV cache"
    def size(n: float) -> str:
        return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / 2**20:.1f} MiB"

    notes = [f"LoRA: {len(req.adapters)} adapter(s), {s.max_loras} slot(s) at rank {s.max_lora_rank}: "
             f"{size(mem.gpu_bytes)} {where}; adapter cache {size(mem.host_bytes)} host RAM"]
    if len(req.adapters) > s.max_loras:
        notes.append(f"LoRA: {len(req.adapters)} adapters share {s.max_loras} slot(s): requests for more adapters "
                     "than that wait for a slot (raise --max-loras, at the KV cost above per slot)")
    return notes


def _config_names(resolved) -> list[str]:
    """A local checkpoint's own name (`_name_or_path` in config.json) and directory name, for adapter matching."""
    if resolved.source != "local" or not resolved.local_path:
        return []
    from pathlib import Path

    from toolkit.catalog.files import CONFIG_JSON_LIMIT, load_json

    names = [Path(resolved.local_path).name]
    try:
        cfg = load_json(Path(resolved.local_path) / "config.json", limit=CONFIG_JSON_LIMIT, what="config.json")
    except Exception:  # already read once by the resolver; a name is only a convenience here
        return names
    if isinstance(cfg, dict) and isinstance(cfg.get("_name_or_path"), str):
        names.append(cfg["_name_or_path"])
    return names


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
    work = req.workload()

    def at(b: int | None) -> throughput.Speed:
        """The serving-speed model for this layout at `b` users in flight (prefill interference,
        TTFT, the KV cache and max_num_seqs included)."""
        return throughput.serving_speed(
            spec, est.weights, gpu, quant, tp=tp, pp=pp, concurrency=b, input_tokens=req.input_tokens,
            output_tokens=req.output_tokens, kv_bytes_per_token=est.capacity.kv_bytes_per_token,
            kv_capacity_tokens=est.capacity.kv_cache_tokens or None, max_num_seqs=est.max_num_seqs,
            max_num_batched_tokens=est.max_num_batched_tokens, enforce_eager=req.enforce_eager)

    def point(b: int) -> capacity.ServingPoint:
        s = at(b)
        return capacity.ServingPoint(s.batch, s.per_user_tokens_per_s, s.tokens_per_s, s.ttft_s)

    sizing = capacity.size(work, point, kv_capacity_tokens=est.capacity.kv_cache_tokens, max_num_seqs=est.max_num_seqs)
    speed = at(sizing.batch_per_replica)
    single = at(1)
    saturation = at(None)
    opt = Option(gpu=gpu, count=tp * pp, tp=tp, pp=pp, quant=quant, est=est, speed=speed, single=single,
                 saturation=saturation)
    opt.problems = list(est.reasons)
    if gpu is not None and tp > gpu.max_per_node:
        opt.problems.append(f"tensor parallel {tp} spans hosts ({gpu.name}: {gpu.max_per_node} per host); keep TP within "
                            f"a host and go across hosts with --pp")
    elif gpu is not None and tp * pp > gpu.max_per_node and (tp * pp) % gpu.max_per_node:
        opt.problems.append(f"TP{tp}·PP{pp} does not fill whole hosts of {gpu.max_per_node} {gpu.name}")
    if est.max_num_batched_tokens < est.max_num_seqs:  # vLLM's scheduler refuses this at start-up
        opt.problems.append(f"max_num_batched_tokens {est.max_num_batched_tokens} < max_num_seqs {est.max_num_seqs}")
    opt.sizing, opt.replicas = sizing, sizing.replicas
    if est.fits and (req.concurrency or not work.has_volume) and est.capacity.max_concurrency < req.users:  # full-length requests
        opt.problems.append(
            f"KV cache holds {est.capacity.max_concurrency:g} requests of {context} tokens, {req.users} needed"
        )
    if est.fits:
        opt.problems.extend(sizing.problems)
    if gpu is not None and gpu.street_price_usd > 0:
        api_price, api_cost, api_reason, as_of = api_usd
        bought, note = capacity.gpus_to_buy(gpu, opt.count * opt.replicas)
        replica_rpm = (sizing.replica_requests_per_s * SECONDS_PER_MONTH / work.peak_factor) if work.has_volume else None
        hybrid = None
        if req.routed_out and api_cost is not None:
            hybrid = _hybrid(req, gpu, opt, point, api_price, api_cost)
        opt.cost = monthly_cost(gpu, bought, gpus_per_host=gpu.max_per_node, api=api_price, api_usd=api_cost,
                                a=req.assumptions, requests_per_month=work.monthly_requests, replica_gpus=opt.count,
                                replica_requests_per_month=replica_rpm, data_must_stay=req.data_must_stay_in_network,
                                api_reason=api_reason, prices_as_of=as_of, purchase_note=note,
                                gpus_needed=opt.count * opt.replicas, hybrid=hybrid)
        if req.budget_usd is not None and opt.cost.hardware_usd > req.budget_usd:
            opt.problems.append(f"hardware ${opt.cost.hardware_usd:,.0f} is over the ${req.budget_usd:,.0f} budget")
    return opt


def _hybrid(req: PlanRequest, gpu: GpuSpec, opt: Option, point, api_price, api_usd: float):
    """The same layout sized by the same capacity path for the (1 − share) of the load kept local
    (the peak shrinks with it: the routed share is assumed spread like the rest of the traffic)."""
    keep = 1 - req.routed_out
    work = req.workload()
    local = replace(
        work, requests_per_month=work.requests_per_month * keep if work.requests_per_month else None,
        requests_per_second=work.requests_per_second * keep if work.requests_per_second else None)
    sizing = capacity.size(local, point, kv_capacity_tokens=opt.est.capacity.kv_cache_tokens, max_num_seqs=opt.est.max_num_seqs)
    bought, _ = capacity.gpus_to_buy(gpu, opt.count * sizing.replicas)
    return hybrid_cost(gpu, bought, gpus_per_host=gpu.max_per_node, share=req.routed_out,
                       api=f"{api_price.provider}/{api_price.model}", api_usd=api_usd,
                       requests_per_month=work.monthly_requests, replicas=sizing.replicas, gpus_per_replica=opt.count,
                       a=req.assumptions,
                       sizing_how=[h for h in sizing.how if h.startswith(("peak rate", "replicas"))])


def _cpu_kv_space(spec, req: PlanRequest, context: int) -> float:
    from toolkit.sizing import kv

    per_req = kv.request_bytes(spec, context, tp=1, pp=1, b_kv=kv.kv_dtype_bytes(req.kv_cache_dtype), batched_tokens=2048, block=16)
    return max(1.0, math.ceil(per_req * req.users * 1.25 / GIB))


def _rank_key(o: Option):
    q = QUALITY_ORDER.index(o.quant.name) if o.quant.name in QUALITY_ORDER else len(QUALITY_ORDER)
    monthly = o.cost.monthly_usd if o.cost else o.count
    return (monthly, o.count, q, -o.speed.tokens_per_s)


def model_tier(spec) -> tuple[str, str]:
    """The closed-API tier a model of this size competes with, and why."""
    from toolkit.sizing.params import param_breakdown

    p = param_breakdown(spec)
    total, active = p.total / 1e9, p.active(spec) / 1e9
    if total > 150:
        return "frontier", f"{total:.0f}B parameters is frontier size"
    if active <= 15:
        return "small", f"{active:.0f}B active parameters (≤ 15B) competes with the small/mini/flash tier"
    return "mid", f"{active:.0f}B active parameters competes with the mid tier"


def _api(req: PlanRequest, spec=None):
    """(price, monthly USD at the volume or None, why this API, price-list date)."""
    prices = catalog.api_prices(req.api_prices_file)
    key, reason = req.api, "given with --api"
    if not key:
        tier, why = model_tier(spec) if spec is not None else (None, "")
        match = next((p for p in prices.prices if tier and p.tier == tier), None)
        if match:
            key, reason = f"{match.provider}/{match.model}", f"{why} (first {tier}-tier entry of the price list; --api picks another)"
        else:
            key, reason = prices.default, "the price list's default (no entry for this model's tier)"
    volume = req.workload().monthly_requests
    for p in prices.prices:
        if f"{p.provider}/{p.model}".lower() == key.lower() or p.model.lower() == key.lower():
            usd = api_monthly_usd(p, volume, req.input_tokens, req.output_tokens) if volume else None
            return p, usd, reason, prices.as_of
    names = ", ".join(f"{p.provider}/{p.model}" for p in prices.prices)
    raise PlanError(f"unknown API '{key}'", fix=f"use --api with one of: {names}")


def plan(req: PlanRequest) -> PlanResult:
    req.check()
    resolved = _weights_for(req, catalog.resolve_model(req.model))
    spec = resolved.spec
    _check_lora(req, resolved)
    context = req.context or min(DEFAULT_CONTEXT, spec.max_position_embeddings)
    if context > spec.max_position_embeddings:
        raise PlanError(
            f"--context {context} exceeds {spec.id}'s maximum of {spec.max_position_embeddings} tokens",
            fix=f"use --context {spec.max_position_embeddings} or less",
        )
    api = _api(req, spec) if req.device == "gpu" else (None, None, None, None)
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
        if 1 <= most.est.capacity.max_concurrency < req.users:
            fixes.append(f"--concurrency {int(most.est.capacity.max_concurrency)} on {most.label}")
    if not req.tp:
        fixes.append("more GPUs: add --gpu with a larger card (see `selfhost gpus`)")
    four_bit = [q for q in ("awq",) if q not in {o.quant.name for o in bad}]
    if four_bit and not resolved.prequantized:
        fixes.append("a 4-bit checkpoint: --quant awq")
    reasons = sorted({p for o in bad for p in o.problems})[:6]
    return NoFitError(
        f"nothing fits {resolved.repo_id} at context {context} with concurrency {req.users}:\n  - " + "\n  - ".join(reasons),
        fix="; or ".join(fixes) if fixes else "relax the constraints",
        hint="selfhost plan MODEL --explain shows where each number comes from",
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "model"


def _image(version: str, cpu: bool) -> str:
    """Server image for the vLLM release planned for (the pinned one unless --vllm-version chose another)."""
    if version == VLLM_VERSION:
        return CPU_IMAGE if cpu else GPU_IMAGE
    return f"selfhost/vllm-cpu:{version}" if cpu else f"vllm/vllm-openai:v{version}"


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
        **_lora_args(req),
    )
    env = {"VLLM_CPU_KVCACHE_SPACE": f"{o.est.memory.kv_cache_gib:g}"} if cpu else {}
    lic = catalog.licenses().get(spec.license) or catalog.licenses()["unknown"]
    warnings = list(o.problems)
    if resolved.source == "local" and resolved.local_path is None:  # a bare config.json
        warnings.append("planned from config.json alone: weight bytes are estimated from the geometry; "
                        "plan the downloaded directory for exact sizes")
    geforce = capacity.consumer_card_warning(o.gpu)
    if geforce:
        warnings.append(geforce)
    if o.quant.kind == "gguf":
        warnings.append("GGUF in vLLM is experimental and single-file only; prefer llama.cpp or an AWQ/FP8 checkpoint")
    if o.quant.kind == "vllm" and o.quant.name in ("awq", "gptq", "compressed-tensors", "bitsandbytes") and not resolved.prequantized:
        warnings.append(f"{o.quant.name} needs a pre-quantized checkpoint: pass its repo id or local directory as MODEL")
    warnings.extend(_lora_notes(req, o))
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
        adapters=[AdapterRef(name=a.name, source=a.path, path=f"{ADAPTER_MOUNT}/{a.name}", rank=a.rank,
                             base_model=a.base_model, modules=list(a.modules)) for a in req.adapters],
        hardware=Hardware(
            device="cpu" if cpu else "gpu",
            gpu=None if cpu else o.gpu.name,
            memory_gib=req.cpu_memory_gib if cpu else o.gpu.memory_gib,
            tensor_parallel_size=o.tp,
            pipeline_parallel_size=o.pp,
            gpus_per_replica=0 if cpu else o.count,
            hosts_per_replica=o.hosts,
            replicas=o.replicas,
        ),
        vllm=vllm,
        runtime=Runtime(vllm_version=req.vllm_version, image=_image(req.vllm_version, cpu), load_time_s=_load_time_s(o), env=env),
        memory=o.est.memory,
        capacity=o.est.capacity,
        performance=Performance(
            decode_tokens_per_s=round(o.single.tokens_per_s, 1),
            aggregate_tokens_per_s=round(o.speed.tokens_per_s, 1),
            per_user_tokens_per_s=round(o.speed.per_user_tokens_per_s, 1),
            at_concurrency=o.speed.batch,
            ttft_s=round(o.speed.ttft_s, 3),
            saturation_tokens_per_s=round(o.saturation.tokens_per_s, 1),
            input_tokens=req.input_tokens,
            output_tokens=req.output_tokens,
            assumptions=throughput.assumptions(o.gpu, req.input_tokens + req.output_tokens // 2, o.quant),
        ),
        cost=o.cost,
        license=verdict(spec, lic, commercial=req.commercial, monthly_active_users=req.monthly_active_users,
                        accept_risk=req.accept_license_risk),
        warnings=warnings,
    )
