"""`selfhost bench -i SITE [PLAN|--bundle DIR]`: vLLM's own benchmark client against a host's server.

`vllm bench serve` runs on the host, in a throwaway container of the server's image on the server's
internal network (`toolkit.operate.bench`), so its TTFT/TPOT/ITL and throughput mean what they mean
in published vLLM benchmark runs; with PLAN the plan's prediction is shown beside them.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Optional

import typer

from toolkit.commands.doctor import BundleOpt, PlanOptArg
from toolkit.commands.lifecycle import dry_run_done, execute
from toolkit.commands.options import DryRunOpt, InventoryOpt, JsonOpt

EXAMPLES = [
    "selfhost bench -i sites/prod plan.yml",
    "selfhost bench -i sites/prod plan.yml --host gpu-02 --concurrency 32 --num-prompts 320",
    "selfhost bench -i sites/prod --input-len 1024 --output-len 256 --json",
    "selfhost bench -i sites/prod plan.yml --dry-run",
]

HostOpt = Annotated[Optional[str], typer.Option("--host", help="Inference host whose server to measure (default: the first).")]
ConcurrencyOpt = Annotated[Optional[int], typer.Option("--concurrency", "-c", min=1, help="Requests in flight at once (default: the concurrency of the plan's figures, else 4).")]
PromptsOpt = Annotated[Optional[int], typer.Option("--num-prompts", "-n", min=1, help="Requests in all (default: 5 × concurrency, at least 20).")]
InputLenOpt = Annotated[Optional[int], typer.Option("--input-len", min=1, help="Prompt tokens per request (default: the plan's, else 256).")]
OutputLenOpt = Annotated[Optional[int], typer.Option("--output-len", min=1, help="Output tokens per request (default: the plan's, else 128).")]
TimeoutOpt = Annotated[int, typer.Option("--timeout", min=10, help="Stop the client after this many seconds.")]


def bench(inventory: InventoryOpt, plan: PlanOptArg = None, bundle: BundleOpt = None, host: HostOpt = None,
          concurrency: ConcurrencyOpt = None, num_prompts: PromptsOpt = None, input_len: InputLenOpt = None,
          output_len: OutputLenOpt = None, timeout: TimeoutOpt = 1800, dry_run: DryRunOpt = False,
          json: JsonOpt = False) -> None:
    """Run `vllm bench serve` on a host against its server; show TTFT, TPOT, ITL and throughput beside the plan's prediction."""
    from toolkit.commands import output
    from toolkit.deploy import locate
    from toolkit.errors import EXIT_HOSTS, EXIT_NO, EXIT_TIMEOUT
    from toolkit.operate import bench as bn
    from toolkit.operate import operations

    ref = locate.resolve(inventory, plan, bundle)
    target = locate.limit_for(ref, host) or ref.hosts[0]
    predicted = None
    if plan is not None:
        from toolkit.plan.model import Plan

        predicted = Plan.load(plan).performance
    load = bn.workload(predicted, concurrency=concurrency, num_prompts=num_prompts, input_len=input_len,
                       output_len=output_len)
    server = bn.server_of(ref.path)
    host_dir = bn.result_dir(server, f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}")
    op = operations.bench(host=target, argv=bn.client_argv(server, load, host_dir=host_dir, timeout_s=timeout),
                          result_dir=host_dir, result_file=bn.RESULT_FILE)
    if dry_run:
        return dry_run_done(output, json, {"host": target, "workload": load.to_dict()}, [op])
    if not json:
        output.line(f"vllm bench serve on {target} against {server.container}: {load.num_prompts} requests, "
                    f"{load.concurrency} at once, {load.input_len} tokens in / {load.output_len} out")
    ran = execute(output, op, ref.path, [target], json, progress=False)
    result, error = bn.outcome(ran, target, predicted=predicted)
    if json:
        output.as_json({"host": target, "workload": load.to_dict(),
                        "result": result.to_dict() if result else None, "error": error})
    elif result:
        _show(result)
    if result is None:
        if not json:
            output.warn(f"{target}: {error}")
        timed_out = error is not None and error.startswith("vllm bench serve wrote no result (timed out")
        raise typer.Exit(EXIT_TIMEOUT if timed_out else EXIT_HOSTS)
    if result.failed:
        raise typer.Exit(EXIT_NO)


def _fmt(x, unit: str = "") -> str:
    return "—" if x is None else f"{x:.4g}{unit}"


def _show(r) -> None:
    from toolkit.commands import output

    p = r.predicted
    at = f" at {p.at_concurrency}" if p else ""
    rows = [
        ["requests", f"{r.completed} of {r.num_prompts} ok, {r.failed} failed in {r.duration:.1f} s", ""],
        ["requests/s", _fmt(r.request_throughput), ""],
        ["output tokens/s (all requests)", _fmt(r.output_throughput),
         f"{p.aggregate_tokens_per_s:g}{at}" if p else ""],
        ["tokens/s one user sees (1000 / TPOT)", _fmt(r.per_user_tokens_per_s),
         f"{p.per_user_tokens_per_s:g}{at}, {p.decode_tokens_per_s:g} alone" if p else ""],
        ["TTFT mean / median / p99", f"{_fmt(r.mean_ttft_ms)} / {_fmt(r.median_ttft_ms)} / {_fmt(r.p99_ttft_ms)} ms",
         f"{p.ttft_s * 1000:g} ms mean{at}" if p and p.ttft_s else ""],
        ["TPOT mean / median / p99", f"{_fmt(r.mean_tpot_ms)} / {_fmt(r.median_tpot_ms)} / {_fmt(r.p99_tpot_ms)} ms", ""],
        ["ITL mean / median / p99", f"{_fmt(r.mean_itl_ms)} / {_fmt(r.median_itl_ms)} / {_fmt(r.p99_itl_ms)} ms", ""],
    ]
    output.table(f"{r.host} · {r.model} · {r.max_concurrency or 'unbounded'} at once", ["", "measured", "plan"], rows)


def register(app: typer.Typer) -> None:
    app.command("bench", epilog="Examples: " + "; ".join(EXAMPLES))(bench)
