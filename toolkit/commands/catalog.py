"""`selfhost models` and `selfhost gpus`: list the built-in catalog (like `sky show-gpus`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.commands.options import JsonOpt

FamilyOpt = Annotated[
    Optional[str], typer.Option("--family", "-f", help="Only this model family (e.g. qwen3, llama3.1).")
]


def register(app: typer.Typer) -> None:
    app.command("models", help="List catalog models (geometry, context, licence).")(models_cmd)
    app.command("gpus", help="List catalog GPUs (memory, bandwidth, compute, price).")(gpus_cmd)
    app.command("apis", help="List the closed APIs `selfhost plan` can compare against (price list and its date).")(apis_cmd)


def apis_cmd(
    json_out: JsonOpt = False,
    api_prices: Annotated[Optional[Path], typer.Option("--api-prices", help="YAML price list overriding the built-in one.")] = None,
) -> None:
    from toolkit import catalog
    from toolkit.commands import output

    prices = catalog.api_prices(str(api_prices) if api_prices else None)
    if json_out:
        output.as_json(prices.model_dump(mode="json"))
        return
    first = {}
    for p in prices.prices:
        if p.tier:
            first.setdefault(p.tier, f"{p.provider}/{p.model}")
    rows = [
        [f"{p.provider}/{p.model}", p.tier or "—", f"{p.input_per_mtok_usd:g}", f"{p.output_per_mtok_usd:g}",
         "default for tier" if first.get(p.tier) == f"{p.provider}/{p.model}" else ""]
        for p in prices.prices
    ]
    output.table(f"Closed-API list prices as of {prices.as_of} (USD per 1M tokens)",
                 ["api", "tier", "input", "output", ""], rows)
    output.line(f"Source: {prices.source}", style="dim")
    output.line("`selfhost plan` compares against the first entry of the model's tier (small ≤ 15B active, frontier > 150B, "
                "else mid); --api picks another, --api-prices FILE replaces the list.", style="dim")


def models_cmd(json_out: JsonOpt = False, family: FamilyOpt = None) -> None:
    from toolkit import catalog
    from toolkit.commands import output
    from toolkit.errors import CatalogError

    specs = catalog.models()
    if family:
        specs = [s for s in specs if s.family.lower() == family.lower()]
        if not specs:
            families = sorted({s.family for s in catalog.models()})
            raise CatalogError(
                f"no models in family '{family}'", fix="families: " + ", ".join(families), hint="selfhost models"
            )
    if json_out:
        output.as_json([s.model_dump(mode="json") for s in specs])
        return
    rows = [
        [
            s.id,
            s.aliases[0] if s.aliases else "",
            f"{s.params_b:g}B",
            s.num_hidden_layers,
            _context(s.max_position_embeddings),
            _kv_kib(s),
            s.license,
            output.openness_short(s.openness),
        ]
        for s in specs
    ]
    output.table(None, ["model", "alias", "params", "layers", "ctx", "KV KiB/tok", "licence", "open"], rows)
    output.line(
        "KV KiB/tok: bf16 KV cache per token over full-attention layers (sliding layers are bounded). "
        "open: W weights · C inference code · T training code · D training data (– = not published).",
        style="dim",
    )


def gpus_cmd(json_out: JsonOpt = False) -> None:
    from toolkit import catalog
    from toolkit.commands import output

    specs = catalog.gpus()
    if json_out:
        output.as_json([g.model_dump(mode="json") for g in specs])
        return
    rows = [
        [
            g.name,
            f"{g.memory_gib:.2f}",
            f"{g.bandwidth_gbs:g}",
            f"{g.bf16_tflops:g}",
            "yes" if g.fp8_tflops else "no",
            f"{g.compute_capability:g}" if g.vendor == "nvidia" else g.vendor,
            f"${g.street_price_usd:,.0f}",
            f"${g.cloud_hourly_usd:.2f}" if g.cloud_hourly_usd is not None else "-",
        ]
        for g in specs
    ]
    output.table(None, ["gpu", "GiB", "GB/s", "bf16 TFLOPS", "fp8", "CC", "price", "$/h"], rows)
    defaults = ", ".join(f"{short} = {full}" for short, full in catalog.GPU_DEFAULTS.items())
    output.line(f"GiB: memory as the CUDA runtime reports it; TFLOPS dense. Short names: {defaults}.", style="dim")


def _context(tokens: int) -> str:
    return f"{tokens // 1024}k" if tokens % 1024 == 0 else f"{tokens:,}"


def _kv_kib(spec) -> str:
    """bf16 KV bytes per token over the full-attention layers, KiB (MLA: latent + rope key), by the sizing formula."""
    from toolkit.sizing import kv

    full = kv.layers_on_rank(spec, 1)["full"]
    return f"{round(full * kv.bytes_per_token_layer(spec, 1, kv.kv_dtype_bytes('auto')) / 1024, 1):g}"
