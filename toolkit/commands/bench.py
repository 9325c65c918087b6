"""`selfhost bench`: a streaming load test against a deployment (or any OpenAI-compatible URL)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.commands.options import JsonOpt

EXAMPLES = [
    "selfhost bench -i sites/prod --api-key-file ~/.selfhost/key --plan plan.yml",
    "selfhost bench -i sites/prod --host gpu-02 --concurrency 32 --duration 120",
    "selfhost bench --url https://10.0.0.11 --api-key-file key.txt --ca sites/prod/pki/ca.crt",
    "selfhost bench --url http://127.0.0.1:8000 --requests 20 --json",
]


def bench(
    inventory: Annotated[Optional[Path], typer.Option("--inventory", "-i", help="Site folder: bench its gateway.")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Inference host of the site (default: the first).")] = None,
    url: Annotated[Optional[str], typer.Option("--url", help="Base URL instead of a site (http://… or https://…).")] = None,
    api_key_file: Annotated[Optional[Path], typer.Option("--api-key-file", help="File whose first line is the API key (default: $SELFHOST_API_KEY).")] = None,
    ca: Annotated[Optional[Path], typer.Option("--ca", help="CA certificate for https (default with -i: the site's CA).")] = None,
    plan: Annotated[Optional[Path], typer.Option("--plan", help="plan.yml: show its predicted speed beside the measurement.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model name (default: the plan's, else the first /v1/models lists).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Parallel streams.")] = 4,
    duration: Annotated[float, typer.Option("--duration", help="Start no request after this many seconds.")] = 30.0,
    requests: Annotated[int, typer.Option("--requests", "-n", help="Send at most this many requests.")] = 100,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Tokens to generate per request.")] = 128,
    json: JsonOpt = False,
) -> None:
    """Measure requests/s, tokens/s, time to first token and inter-token latency (stops at --requests or --duration)."""
    from toolkit.commands import output
    from toolkit.operate import loadtest
    from toolkit.errors import ConfigError

    if (inventory is None) == (url is None):
        raise ConfigError("give either -i SITE or --url URL", hint=EXAMPLES[0])
    key = loadtest.read_key(api_key_file) or os.environ.get("SELFHOST_API_KEY") or None
    prediction = None
    if plan is not None:
        from toolkit.plan.model import Plan

        p = Plan.load(plan)
        prediction = p.performance
        model = model or p.vllm.served_model_name
    if inventory is not None:
        from toolkit.render.site import load_site

        target = loadtest.site_target(load_site(inventory), host, api_key=key, model=model,
                                      ca_file=str(ca) if ca else None)
    else:
        target = loadtest.Target(url=url.rstrip("/"), api_key=key, ca_file=str(ca) if ca else None, model=model)
    if not json:
        output.line(f"benchmarking {target.url}: {concurrency} streams, up to {requests} requests or {duration:g} s")
    result = loadtest.measure(target, concurrency=concurrency, duration_s=duration, max_requests=requests,
                          max_tokens=max_tokens, prediction=prediction)
    if json:
        output.as_json(result.to_dict())
    else:
        _show(result)
    if result.errors:
        from toolkit.errors import EXIT_NO

        raise typer.Exit(EXIT_NO)


def _fmt(x, unit: str = "") -> str:
    return "—" if x is None else f"{x:g}{unit}"


def _show(r) -> None:
    from toolkit.commands import output

    p = r.predicted
    rows = [
        ["requests", f"{r.ok} ok, {r.errors} failed in {r.duration_s:g} s", ""],
        ["requests/s", _fmt(r.requests_per_s), ""],
        ["output tokens/s (all streams)", _fmt(r.output_tokens_per_s),
         f"{p.aggregate_tokens_per_s:g} at {p.at_concurrency} streams" if p else ""],
        ["tokens/s one stream sees", _fmt(r.per_stream_tokens_per_s),
         f"{p.decode_tokens_per_s:g} alone, {p.per_user_tokens_per_s:g} at {p.at_concurrency}" if p else ""],
        ["time to first token p50 / p95", f"{_fmt(r.ttft_p50_s, ' s')} / {_fmt(r.ttft_p95_s, ' s')}",
         f"{p.ttft_s:g} s mean, no queue" if p and p.ttft_s else ""],
        ["inter-token latency p50 / p95", f"{_fmt(r.itl_p50_s, ' s')} / {_fmt(r.itl_p95_s, ' s')}", ""],
    ]
    output.table(f"{r.url} · {r.model} · {r.concurrency} streams", ["", "measured", "plan"], rows)
    for e in r.error_samples:
        output.warn(e)


def register(app: typer.Typer) -> None:
    app.command("bench", epilog="Examples: " + "; ".join(EXAMPLES))(bench)
