"""`selfhost plan`: size hardware for a model, or evaluate one exact layout; writes plan.yml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.commands.options import JsonOpt

EXAMPLES = [
    "selfhost plan llama-3.1-70b --context 32768 --concurrency 50",
    "selfhost plan Qwen/Qwen2.5-72B-Instruct-AWQ --gpu L40S --requests-per-month 2000000",
    "selfhost plan llama-3.1-8b --gpu H100 --tp 1 --max-model-len 16000 --json",
    "selfhost plan ./models/my-model --device cpu --context 4096",
]

Int = Optional[int]
Float = Optional[float]


def plan(
    model: Annotated[str, typer.Argument(help="Catalog id or alias, a quantized repo id, a local model directory or a .gguf file.")],
    quant: Annotated[Optional[str], typer.Option("--quant", "-q", help="Weight format (none, fp8, awq, gptq, mxfp4, Q4_K_M…); default: try the native format and fp8.")] = None,
    context: Annotated[Int, typer.Option("--context", "--max-model-len", help="Longest request (prompt + output) in tokens.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Requests of full context served at once.")] = 1,
    tokens_per_second: Annotated[Float, typer.Option("--tokens-per-second", help="Decode speed each user must see.")] = None,
    gpu: Annotated[Optional[list[str]], typer.Option("--gpu", "-g", help="GPU SKU to consider (repeatable); default: all known.")] = None,
    gpu_memory_gib: Annotated[Float, typer.Option("--gpu-memory-gib", help="Size for a card not in the catalog (vGPU slice…).")] = None,
    budget: Annotated[Float, typer.Option("--budget", help="Hardware budget in USD.")] = None,
    requests_per_month: Annotated[Int, typer.Option("--requests-per-month", help="Volume, for cost and break-even.")] = None,
    input_tokens: Annotated[int, typer.Option("--input-tokens", help="Mean prompt tokens per request.")] = 1000,
    output_tokens: Annotated[int, typer.Option("--output-tokens", help="Mean output tokens per request.")] = 300,
    commercial: Annotated[bool, typer.Option("--commercial/--non-commercial", help="Use is commercial.")] = True,
    monthly_active_users: Annotated[Int, typer.Option("--monthly-active-users", help="For licence thresholds (Llama: 700M).")] = None,
    device: Annotated[str, typer.Option("--device", help="gpu, or cpu for vLLM's CPU backend (AVX-512 servers).")] = "gpu",
    cpu_memory_gib: Annotated[float, typer.Option("--cpu-memory-gib", help="Host RAM for --device cpu.")] = 64.0,
    cpu_kv_space_gib: Annotated[Float, typer.Option("--cpu-kv-space-gib", help="KV cache RAM for --device cpu (VLLM_CPU_KVCACHE_SPACE).")] = None,
    api: Annotated[Optional[str], typer.Option("--api", help="Closed API to compare against (see the price list).")] = None,
    api_prices: Annotated[Optional[Path], typer.Option("--api-prices", help="YAML price list overriding the built-in one.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Deployment and served model name.")] = None,
    tp: Annotated[Int, typer.Option("--tp", help="Evaluate this tensor-parallel size only.")] = None,
    pp: Annotated[int, typer.Option("--pp", help="Pipeline-parallel size (with --tp).")] = 1,
    gpu_memory_utilization: Annotated[Float, typer.Option("--gpu-memory-utilization")] = None,
    max_num_batched_tokens: Annotated[Int, typer.Option("--max-num-batched-tokens")] = None,
    max_num_seqs: Annotated[Int, typer.Option("--max-num-seqs")] = None,
    kv_cache_dtype: Annotated[str, typer.Option("--kv-cache-dtype", help="auto, fp8, fp8_e4m3, fp8_e5m2.")] = "auto",
    enforce_eager: Annotated[bool, typer.Option("--enforce-eager", help="No CUDA graphs.")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the plan.")] = Path("plan.yml"),
    no_write: Annotated[bool, typer.Option("--no-write", help="Do not write the plan file.")] = False,
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

    if kv_cache_dtype not in ("auto", "fp8", "fp8_e4m3", "fp8_e5m2"):
        raise PlanError(f"--kv-cache-dtype must be auto, fp8, fp8_e4m3 or fp8_e5m2 (got {kv_cache_dtype})")
    if tp and not (gpu or gpu_memory_gib) and device == "gpu":
        raise PlanError("--tp evaluates one layout and needs the GPU", fix="add --gpu NAME or --gpu-memory-gib X")
    req = planner.PlanRequest(
        model=model, quant=quant, context=context, concurrency=concurrency, tokens_per_second=tokens_per_second,
        gpus=gpu or [], gpu_memory_gib=gpu_memory_gib, budget_usd=budget, requests_per_month=requests_per_month,
        input_tokens=input_tokens, output_tokens=output_tokens, commercial=commercial,
        monthly_active_users=monthly_active_users, device=device, cpu_memory_gib=cpu_memory_gib,
        cpu_kv_space_gib=cpu_kv_space_gib, api=api, api_prices_file=str(api_prices) if api_prices else None,
        name=name, tp=tp, pp=pp, gpu_memory_utilization=gpu_memory_utilization,
        max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs, kv_cache_dtype=kv_cache_dtype,
        enforce_eager=enforce_eager,
    )
    result = planner.plan(req)
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


def register(app: typer.Typer) -> None:
    app.command("plan", epilog="Examples:\n\n" + "\n\n".join(EXAMPLES))(plan)
