"""Sizing accuracy on real vLLM start-up logs: prints median and worst errors.

    python bench/sizing_accuracy.py [--logs ../shared/validation/vllm_startup_logs.json] [--verbose]

For every record whose model resolves in the catalog, the engine is run with the record's own
settings (vLLM version, GPU memory, TP/PP, max_model_len, gpu_memory_utilization, batch limits) and
compared with what vLLM printed: weights per GPU, KV-cache memory (error as a share of GPU memory),
KV tokens, and the fit verdict. Targets (issue #2): weights within 3 %, KV cache within 3 % of GPU
memory, verdict right on ≥ 90 % of records.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolkit import catalog  # noqa: E402
from toolkit.errors import SelfhostError  # noqa: E402
from toolkit.sizing.engine import engine_profile  # noqa: E402
from toolkit.sizing.estimate import Device, Settings, estimate  # noqa: E402

DEFAULT_LOGS = ROOT.parent / "shared" / "validation" / "vllm_startup_logs.json"
QUANT_WORDS = {"fp8": "fp8", "awq": "awq", "gptq": "gptq", "bitsandbytes": "bitsandbytes", "mxfp4": "mxfp4"}
# Settings vLLM had that this engine model does not represent; such records are reported, not scored.
UNMODELLED = {"cpu-offload": "weights offloaded to CPU (--cpu-offload-gb)"}


@dataclass
class Row:
    id: int
    model: str
    weights: tuple[float, float] | None
    kv: tuple[float, float, float] | None  # predicted, actual, total memory
    tokens: tuple[int, int] | None
    verdict: tuple[bool, bool] | None
    note: str = ""


def record_inputs(r: dict):
    """Map one log record onto estimator inputs; None if the model is not in the catalog."""
    ref = re.split(r"\s+\(", r["model_id"])[0].strip()
    try:
        resolved = catalog.resolve_model(ref)
    except SelfhostError:
        return None
    quant = resolved.quant
    word = (r.get("quantization") or "").split()[0].lower() if r.get("quantization") else ""
    if word in QUANT_WORDS:
        quant = catalog.quant(QUANT_WORDS[word])
    total = r.get("total_gpu_memory_gib")
    gpu = None
    for candidate in (r.get("gpu_model") or "").replace("(", " ( ").split(" ( ")[:1]:
        try:
            gpu = catalog.gpu(candidate.strip())
        except SelfhostError:
            gpu = None
    if total is None:
        mib = re.search(r"([\d,]{4,}) MiB", r.get("gpu_model") or "")
        total = int(mib.group(1).replace(",", "")) / 1024 if mib else (gpu.memory_gib if gpu else None)
    if total is None:
        return None
    tp = r.get("tensor_parallel_size") or 1
    pp = r.get("pipeline_parallel_size") or 1
    mml = r.get("max_model_len") or r.get("max_concurrency_at_tokens") or resolved.spec.max_position_embeddings
    profile = engine_profile(r.get("vllm_version") or "0.11", v1=r.get("engine") == "V1")
    settings = Settings(
        max_model_len=mml,
        gpu_memory_utilization=r.get("gpu_memory_utilization"),
        max_num_batched_tokens=r.get("max_num_batched_tokens"),
        max_num_seqs=r.get("max_num_seqs"),
        kv_cache_dtype=(r.get("kv_cache_dtype") or "auto") if (r.get("kv_cache_dtype") or "auto").startswith(("fp8", "auto")) else "auto",
        enforce_eager=bool(r.get("enforce_eager")),
    )
    device = Device(memory_gib=total, gpu=gpu)
    return resolved, quant, device, settings, tp, pp, profile


def evaluate(r: dict) -> Row | None:
    inputs = record_inputs(r)
    if inputs is None:
        return None
    resolved, quant, device, settings, tp, pp, profile = inputs
    est = estimate(resolved.spec, quant, device, settings, tp=tp, pp=pp, profile=profile)
    notes = (r.get("notes") or "").lower()
    skip = next((why for key, why in UNMODELLED.items() if key in notes), "")
    row = Row(id=r["id"], model=r["model_id"][:44], weights=None, kv=None, tokens=None, verdict=None, note=skip)
    if r.get("weights_gib") and not skip:
        row.weights = (est.memory.weights_gib, r["weights_gib"])
    if r.get("kv_cache_gib") is not None and not skip:
        row.kv = (est.memory.kv_cache_gib, r["kv_cache_gib"], device.memory_gib)
    actual_tokens = r.get("gpu_kv_cache_tokens") or (
        r["num_gpu_blocks"] * r["block_size"] if r.get("num_gpu_blocks") and r.get("block_size") else None
    )
    if actual_tokens and not skip:
        row.tokens = (est.capacity.kv_cache_tokens, actual_tokens)
    if r.get("startup_ok") is not None and not skip:
        row.verdict = (est.fits, bool(r["startup_ok"]))
    return row


def summarize(name: str, errors: list[float], unit: str = "%") -> str:
    if not errors:
        return f"{name}: no records"
    abs_e = [abs(e) for e in errors]
    return (f"{name}: n={len(errors)}  median |err| {statistics.median(abs_e):.2f}{unit}  "
            f"worst {max(abs_e):.2f}{unit}  within 3%: {sum(e <= 3 for e in abs_e)}/{len(abs_e)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", type=Path, default=DEFAULT_LOGS)
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)
    records = json.loads(args.logs.read_text())
    rows = [row for row in map(evaluate, records) if row is not None]
    w_err = [100 * (p - a) / a for p, a in (r.weights for r in rows if r.weights)]
    kv_err = [100 * (p - a) / t for p, a, t in (r.kv for r in rows if r.kv)]
    tok_err = [100 * (p - a) / a for p, a in (r.tokens for r in rows if r.tokens)]
    verdicts = [r.verdict for r in rows if r.verdict]
    if args.verbose:
        print(f"{'id':>3} {'model':44} {'weights p/a GiB':>17} {'KV p/a GiB':>15} {'tokens p/a':>19} verdict")
        for r in rows:
            w = f"{r.weights[0]:.2f}/{r.weights[1]:.2f}" if r.weights else "-"
            k = f"{r.kv[0]:.2f}/{r.kv[1]:.2f}" if r.kv else "-"
            t = f"{r.tokens[0]}/{r.tokens[1]}" if r.tokens else "-"
            v = ("ok" if r.verdict[0] == r.verdict[1] else f"WRONG (pred fits={r.verdict[0]})") if r.verdict else "-"
            print(f"{r.id:>3} {r.model:44} {w:>17} {k:>15} {t:>19} {v} {r.note}")
    print(f"records: {len(records)}, in catalog: {len(rows)}")
    print(summarize("weights per GPU (error vs logged)", w_err))
    print(summarize("KV cache (error as % of GPU memory)", kv_err))
    print(summarize("KV tokens (error vs logged)", tok_err))
    right = sum(p == a for p, a in verdicts)
    print(f"fit verdict: {right}/{len(verdicts)} right ({100 * right / max(1, len(verdicts)):.0f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
