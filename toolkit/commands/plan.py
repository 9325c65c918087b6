"""`selfhost plan`: size hardware for a model, or evaluate one exact layout; writes plan.yml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.commands.options import JsonOpt
from toolkit.plan.vllm_args import KNOBS, KV_CACHE_DTYPES

EXAMPLES = [
    "selfhost plan llama-3.1-70b --context 32768 --concurrency 50",
    "selfhost plan Qwen/Qwen2.5-72B-Instruct-AWQ --gpu L40S --requests-per-month 2000000",
    "selfhost plan llama-3-70b --requests-per-month 10000000 --input-tokens 500 --output-tokens 1000 --engineers 1",
    "selfhost plan llama-3-70b --requests-per-month 10000000 --routed-out 0.3 --api anthropic/claude-sonnet-4-5",
    "selfhost plan llama-3.1-8b --gpu H100 --tp 1 --max-model-len 16000 --json",
    "selfhost plan ./models/my-model --device cpu --context 4096",
]

Int = Optional[int]
Float = Optional[float]


def plan(
    model: Annotated[str, typer.Argument(help="Catalog id or alias, a quantized repo id, a local model directory or a .gguf file.")],
    quant: Annotated[Optional[str], typer.Option("--quant", "-q", help="Weight format (none, fp8, awq, gptq, mxfp4, Q4_K_M…); default: try the native format and fp8.")] = None,
    context: Annotated[Int, typer.Option("--context", "--max-model-len", help="Longest request (prompt + output) in tokens.")] = None,
    concurrency: Annotated[Int, typer.Option("--concurrency", "-c", help="Requests of full context served at once per replica (default: derived from the volume, else 1).")] = None,
    tokens_per_second: Annotated[Float, typer.Option("--tokens-per-second", help="Decode speed each user must see (service level).")] = None,
    ttft_p95: Annotated[Float, typer.Option("--ttft-p95", help="Service level: 95th-percentile time to first token, seconds.")] = None,
    gpu: Annotated[Optional[list[str]], typer.Option("--gpu", "-g", help="GPU SKU to consider (repeatable); default: all known.")] = None,
    gpu_memory_gib: Annotated[Float, typer.Option("--gpu-memory-gib", help="Size for a card not in the catalog (vGPU slice…).")] = None,
    budget: Annotated[Float, typer.Option("--budget", help="Hardware budget in USD.")] = None,
    requests_per_month: Annotated[Int, typer.Option("--requests-per-month", help="Volume: sizes replicas (with --peak-factor) and the cost comparison.")] = None,
    requests_per_second: Annotated[Float, typer.Option("--requests-per-second", help="Volume as the request rate at peak.")] = None,
    input_tokens: Annotated[int, typer.Option("--input-tokens", help="Mean prompt tokens per request.")] = 1000,
    output_tokens: Annotated[int, typer.Option("--output-tokens", help="Mean output tokens per request.")] = 300,
    commercial: Annotated[bool, typer.Option("--commercial/--non-commercial", help="Use is commercial.")] = True,
    monthly_active_users: Annotated[Int, typer.Option("--monthly-active-users", help="Monthly active users of your products on the model version's release date, for licence thresholds (Llama: 700M, tested once at that date; Qwen's 100M cap is ongoing: give current MAU).")] = None,
    accept_license_risk: Annotated[bool, typer.Option("--accept-license-risk", help="Plan even when the licence does not allow the use described; recorded in plan.yml (license.risk_accepted).")] = False,
    vllm_version: Annotated[Optional[str], typer.Option("--vllm-version", help="vLLM release whose memory defaults are modelled and whose image is deployed (default: the pinned release; `selfhost --version` names it).")] = None,
    device: Annotated[str, typer.Option("--device", help="gpu, or cpu for vLLM's CPU backend (AVX-512 servers).")] = "gpu",
    cpu_memory_gib: Annotated[float, typer.Option("--cpu-memory-gib", help="Host RAM for --device cpu.")] = 64.0,
    cpu_kv_space_gib: Annotated[Float, typer.Option("--cpu-kv-space-gib", help="KV cache RAM for --device cpu (VLLM_CPU_KVCACHE_SPACE).")] = None,
    api: Annotated[Optional[str], typer.Option("--api", help="Closed API to compare against (see the price list).")] = None,
    api_prices: Annotated[Optional[Path], typer.Option("--api-prices", help="YAML price list overriding the built-in one.")] = None,
    data_must_stay_in_network: Annotated[bool, typer.Option("--data-must-stay-in-network", help="The data may not leave your network: the API is not an option.")] = False,
    routed_out: Annotated[Float, typer.Option("--routed-out", help="Hybrid: share of requests (0 ≤ share < 1) the router may send to the closed API (--api); the rest is sized and costed on your hardware, shown beside own-only and API-only.")] = None,
    assumptions: Annotated[Optional[Path], typer.Option("--assumptions", help="YAML file of cost assumptions (keys as in --json cost.assumptions; flags override it).")] = None,
    amortization_months: Annotated[Float, typer.Option("--amortization-months", help="Months the hardware is written off over (default 36).")] = None,
    power_price: Annotated[Float, typer.Option("--power-price", help="Electricity, USD per kWh (default 0.15).")] = None,
    pue: Annotated[Float, typer.Option("--pue", help="Facility power overhead, ≥ 1 (default 1.4).")] = None,
    host_share: Annotated[Float, typer.Option("--host-share", help="Server cost per GPU slot, USD (default 2500).")] = None,
    ops_per_server: Annotated[Float, typer.Option("--ops-per-server", help="Operations per server-month, USD (default 400).")] = None,
    peak_factor: Annotated[Float, typer.Option("--peak-factor", help="Peak rate ÷ monthly-average rate (default 3).")] = None,
    engineers: Annotated[Float, typer.Option("--engineers", help="Engineers dedicated to running it (default 0: staff excluded).")] = None,
    engineer_cost: Annotated[Float, typer.Option("--engineer-cost", help="Fully loaded USD per engineer-month (default 15000).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Deployment and served model name.")] = None,
    tp: Annotated[Int, typer.Option("--tp", help="Evaluate this tensor-parallel size only.")] = None,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline-parallel size (with --tp).")] = 1,
    # The engine knobs: flag, help and default from vllm_args.KNOBS (declared once there).
    gpu_memory_utilization: Annotated[Float, typer.Option(KNOBS["gpu_memory_utilization"].flag, help=KNOBS["gpu_memory_utilization"].help)] = KNOBS["gpu_memory_utilization"].default,
    max_num_batched_tokens: Annotated[Int, typer.Option(KNOBS["max_num_batched_tokens"].flag, help=KNOBS["max_num_batched_tokens"].help)] = KNOBS["max_num_batched_tokens"].default,
    max_num_seqs: Annotated[Int, typer.Option(KNOBS["max_num_seqs"].flag, help=KNOBS["max_num_seqs"].help)] = KNOBS["max_num_seqs"].default,
    kv_cache_dtype: Annotated[str, typer.Option(KNOBS["kv_cache_dtype"].flag, help=KNOBS["kv_cache_dtype"].help)] = KNOBS["kv_cache_dtype"].default,
    enforce_eager: Annotated[bool, typer.Option(KNOBS["enforce_eager"].flag, help=KNOBS["enforce_eager"].help)] = KNOBS["enforce_eager"].default,
    lora: Annotated[Optional[list[str]], typer.Option("--lora", help="Serve a LoRA adapter beside the model: NAME=PATH of a local PEFT adapter directory (repeatable); checked against the model before anything ships.")] = None,
    max_loras: Annotated[Int, typer.Option("--max-loras", help="Adapter slots per batch; vLLM pre-allocates GPU buffers for each (default 1, vLLM's).")] = None,
    max_lora_rank: Annotated[Int, typer.Option("--max-lora-rank", help="Rank the buffers are sized for: 1, 8, 16, 32, 64, 128, 256, 320 or 512 (default: the adapters' largest rank rounded up).")] = None,
    max_cpu_loras: Annotated[Int, typer.Option("--max-cpu-loras", help="Adapters kept in host RAM (default: --max-loras, vLLM's).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the plan.")] = Path("plan.yml"),
    no_write: Annotated[bool, typer.Option("--no-write", help="Do not write the plan file.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace --out even when it is not an unchanged plan selfhost wrote (a hand-edited plan, another file).")] = False,
    top: Annotated[int, typer.Option("--top", help="Options to show.")] = 5,
    explain: Annotated[bool, typer.Option("--explain", help="Show where every number came from.")] = False,
    json: JsonOpt = False,
) -> None:
    """Size GPU hardware for MODEL and write plan.yml.

    Without --tp, searches GPU type × count × TP/PP × quantization and ranks what fits.
    With --tp (and --gpu or --gpu-memory-gib), evaluates exactly that layout; exit code 1 when it does not fit.
    """
    from toolkit.commands import output
    from toolkit.plan import planner
    from toolkit.errors import PlanError
    from toolkit.plan.explain import explain as explain_rows
    from toolkit.plan.report import plan_report

    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise PlanError(f"--kv-cache-dtype must be one of {', '.join(KV_CACHE_DTYPES)} (got {kv_cache_dtype})")
    if tp and not (gpu or gpu_memory_gib) and device == "gpu":
        raise PlanError("--tp evaluates one layout and needs the GPU", fix="add --gpu NAME or --gpu-memory-gib X")
    if not 1 <= top <= 100:
        raise PlanError(f"--top must be between 1 and 100 (got {top})")
    if not no_write:
        _check_out(out, force)  # before any work: never overwrite a hand-edited plan or another file
    from toolkit.plan.costs import resolve_assumptions

    cost_assumptions = resolve_assumptions(assumptions, {
        "--amortization-months": amortization_months, "--power-price": power_price, "--pue": pue,
        "--host-share": host_share, "--ops-per-server": ops_per_server, "--peak-factor": peak_factor,
        "--engineers": engineers, "--engineer-cost": engineer_cost,
    })
    req = planner.PlanRequest(
        model=model, quant=quant, context=context, concurrency=concurrency, tokens_per_second=tokens_per_second,
        ttft_p95_s=ttft_p95, requests_per_second=requests_per_second,
        data_must_stay_in_network=data_must_stay_in_network, routed_out=routed_out, assumptions=cost_assumptions,
        gpus=gpu or [], gpu_memory_gib=gpu_memory_gib, budget_usd=budget, requests_per_month=requests_per_month,
        input_tokens=input_tokens, output_tokens=output_tokens, commercial=commercial,
        monthly_active_users=monthly_active_users, device=device, cpu_memory_gib=cpu_memory_gib,
        cpu_kv_space_gib=cpu_kv_space_gib, api=api, api_prices_file=str(api_prices) if api_prices else None,
        name=name, tp=tp, pp=pp, gpu_memory_utilization=gpu_memory_utilization,
        max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs, kv_cache_dtype=kv_cache_dtype,
        enforce_eager=enforce_eager, accept_license_risk=accept_license_risk,
        loras=_lora_pairs(lora or []), max_loras=max_loras, max_lora_rank=max_lora_rank, max_cpu_loras=max_cpu_loras,
        **({"vllm_version": vllm_version} if vllm_version else {}),
    )
    result = planner.plan(req)
    result.plan.require_license_ok("plan")  # not allowed and not acknowledged: one-line error, nothing written
    chosen = result.options[0] if result.options else result.rejected[0]
    fits = bool(result.options)
    rows = explain_rows(req, planner.catalog.resolve_model(model), chosen) if explain else []
    report = plan_report(result.plan, chosen, result.options[:top] if not tp else [chosen], result.rejected,
                         fits=fits, explain=rows)
    written = None
    if fits and not no_write:
        result.plan.dump(out)
        written = out
    if json:
        output.as_json(report.model_dump(mode="json"))
    else:
        output.plan_summary(report, written=written)
    if not fits:
        raise typer.Exit(1)


def _lora_pairs(values: list[str]) -> list[tuple[str, str]]:
    """`--lora NAME=PATH` values as (name, path); a value without '=' is refused with the form to use."""
    from toolkit.errors import PlanError

    pairs = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise PlanError(f"--lora {value[:60]!r}: expected NAME=PATH", fix="e.g. --lora support-bot=./adapters/support-bot")
        pairs.append((name, path))
    return pairs


def _check_out(out: Path, force: bool) -> None:
    """Refuse an --out that cannot be written, or that holds something other than an unchanged generated plan."""
    from toolkit.errors import ConfigError
    from toolkit.plan.model import Plan

    if out.is_dir() or str(out).endswith(("/", "\\")):
        raise ConfigError(f"{out}: is a directory; --out needs a file path", fix=f"e.g. -o {out / 'plan.yml'}")
    if not out.parent.is_dir():
        raise ConfigError(f"{out}: directory {out.parent} does not exist", fix="create it, or give another --out")
    if out.exists() and not out.is_file():  # /dev/null, a FIFO, a socket: never replaced, not even with --force
        raise ConfigError(f"{out}: not a regular file; refusing to replace it with a plan", fix="give a file path with -o")
    if out.exists() or out.is_symlink():
        if not force and not Plan.is_unchanged_output(out):
            raise ConfigError(
                f"{out}: exists and is not an unchanged plan written by selfhost plan (hand-edited, or another file); not overwriting it",
                fix="pass --force to replace it, or -o another path",
            )


def register(app: typer.Typer) -> None:
    app.command("plan", epilog="Examples:\n\n" + "\n\n".join(EXAMPLES))(plan)
