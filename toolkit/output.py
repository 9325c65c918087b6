"""The only module that prints. Tables and hints go to the terminal; `--json` prints one JSON document."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from toolkit.errors import SelfhostError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def line(text: str = "", *, style: str | None = None) -> None:
    console.print(text, style=style, markup=False)


def markup(text: str) -> None:
    console.print(text)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title, title_justify="left", show_lines=False)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    console.print(t)


def as_json(data: Any) -> None:
    """One JSON document on stdout, nothing else (scripts parse it)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error(exc: SelfhostError) -> None:
    err_console.print("error: " + exc.message, style="bold red", markup=False)
    if exc.fix:
        err_console.print("To fix: " + exc.fix, markup=False)
    if exc.hint:
        err_console.print("Hint:   " + exc.hint, markup=False)


def warn(text: str) -> None:
    err_console.print("warning: " + text, style="yellow", markup=False)


def plan_summary(report, *, written=None) -> None:
    """The human view of `selfhost plan`: best layout, memory per GPU, options, cost, licence."""
    r = report
    verdict = "fits" if r.fits else "does NOT fit"
    best = r.options[0] if r.options else None
    head = best.label if best else r.model
    console.print(f"[bold]{r.model}[/] — {head}: [{'green' if r.fits else 'red'}]{verdict}[/] (vLLM {r.vllm_version} defaults)")
    for reason in r.reasons:
        line(f"  ✗ {reason}", style="red")
    m = r.per_gpu
    table(
        "Memory per GPU (GiB)",
        ["total", "budget", "weights", "activations", "non-torch", "CUDA graphs", "KV cache", "headroom"],
        [[m.total_gib, m.requested_gib, m.weights_gib, m.activation_gib, m.non_torch_gib, m.cuda_graph_gib, m.kv_cache_gib, m.headroom_gib]],
    )
    c, p = r.capacity, r.performance
    line(
        f"KV cache: {c.kv_cache_tokens:,} tokens · context {c.max_model_len:,} (up to {c.max_model_len_possible:,}) · "
        f"{c.max_concurrency:g} full-length requests at once"
    )
    line(
        f"Speed: {p.decode_tokens_per_s:g} tokens/s single stream · {p.aggregate_tokens_per_s:g} tokens/s at "
        f"{p.at_concurrency} concurrent ({p.per_user_tokens_per_s:g} per user)"
    )
    if len(r.options) > 1:
        table(
            "Options that fit (cheapest first)",
            ["layout", "KV GiB/GPU", "max conc.", "tok/s 1 user", "tok/s total", "$/month"],
            [[o.label, o.per_gpu.kv_cache_gib, o.max_concurrency, o.decode_tokens_per_s, o.aggregate_tokens_per_s,
              f"{o.monthly_usd:,.0f}" if o.monthly_usd is not None else "—"] for o in r.options],
        )
    if r.cost:
        cost = r.cost
        text = f"Cost: ${cost.monthly_usd:,.0f}/month (hardware ${cost.hardware_usd:,.0f})"
        if cost.api_monthly_usd is not None:
            text += f" vs {cost.api} ${cost.api_monthly_usd:,.0f}/month"
            text += f" → break-even in {cost.break_even_months:g} months" if cost.break_even_months else " → the API stays cheaper at this volume"
        line(text)
    line(f"Quantization {r.quantization}: {r.quantization_quality}")
    lic = r.license
    line(f"Licence: {lic.summary}", style=None if lic.allowed else "red")
    for duty in lic.duties:
        line(f"  · {duty}")
    for w in r.warnings:
        warn(w)
    line("vllm serve " + " ".join(r.vllm_argv))
    if r.explain:
        table("Where the numbers come from", ["quantity", "value", "source", "detail"],
              [[e.name, e.value, e.provenance, e.detail] for e in r.explain])
    if written:
        line(f"Plan written to {written}")
