"""Serving-speed accuracy on real vLLM benchmark runs: prints median and p90 errors.

    python bench/throughput_accuracy.py [--results ../shared/validation/vllm_bench_results.json] [-v]

Every record whose model and GPU resolve in the catalog is run through
toolkit.sizing.throughput.serving_speed with the record's own layout, engine limits and workload
(mean prompt/output tokens from the totals). Compared: per-user decode speed (1000 / mean TPOT),
output tokens/s of the replica, and mean TTFT. Runs without a client cap are bursts of num_prompts
requests; their TTFT is queueing and is shown, not scored. Targets: per-user ≤ 10 %, output ≤ 15 %,
TTFT ≤ 25 % median absolute error.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolkit import catalog  # noqa: E402
from toolkit.errors import SelfhostError  # noqa: E402
from toolkit.sizing import throughput  # noqa: E402
from toolkit.sizing.engine import engine_profile  # noqa: E402
from toolkit.sizing.estimate import Device, Settings, estimate  # noqa: E402

DEFAULT_RESULTS = ROOT.parent / "shared" / "validation" / "vllm_bench_results.json"
QUANT_WORDS = {"fp8": "fp8", "awq": "awq", "gptq": "gptq", "mxfp4": "mxfp4", "bitsandbytes": "bitsandbytes"}
TARGETS = {"per_user": 10.0, "output": 15.0, "ttft": 25.0}
# Runs whose setup the model does not represent: reported, not scored.
SKIP_NOTES = {
    "cpu-offload": "weights offloaded to CPU (decode bound by the CPU link)",
    "8 separate vllm servers": "several replicas behind a load balancer",
}
# Workloads whose lengths the source does not state: assumed means (prompt, output) for a short chat turn.
UNKNOWN_LENGTHS = (256, 256)


@dataclass
class Row:
    id: int
    model: str
    gpu: str
    mode: str
    family: str = ""
    gpu_key: str = ""
    per_user: tuple[float, float] | None = None
    output: tuple[float, float] | None = None
    ttft: tuple[float, float] | None = None
    note: str = ""
    scored: dict = field(default_factory=dict)


def _resolve_model(model_id: str):
    ref = re.split(r"\s+\(", model_id)[0].strip()
    candidates = [ref]
    name = ref.split("/")[-1]
    parts = name.split("-")
    candidates += ["-".join(parts[:i]) for i in range(len(parts) - 1, 1, -1)]  # drop publisher suffixes
    for c in candidates:
        try:
            return catalog.resolve_model(c)
        except SelfhostError:
            continue
    return None


def _resolve_gpu(text: str):
    words = (text or "").replace("(", " ").replace(")", " ").split()
    tries = [" ".join(words), "-".join(words)]
    tries += [" ".join(w for w in words if w.upper() not in ("SXM", "SXM4", "SXM5", "HBM3")), words[0] if words else ""]
    for t in tries:
        try:
            return catalog.gpu(t)
        except SelfhostError:
            continue
    return None


def record_inputs(r: dict):
    """Map one record onto serving_speed inputs, or return the reason it cannot be mapped."""
    notes = (r.get("notes") or "").lower()
    if r.get("abnormal"):
        return f"abnormal: {r.get('abnormal_reason') or ''}"[:90]
    for key, why in SKIP_NOTES.items():
        if key in notes:
            return why
    resolved = _resolve_model(r["model_id"])
    if resolved is None:
        return f"model {r['model_id']} not in catalog"
    gpu = _resolve_gpu(r.get("gpu_model"))
    if gpu is None:
        return f"GPU {r.get('gpu_model')} not in catalog"
    quant = resolved.quant
    word = (r.get("quantization") or "").split()[0].lower() if r.get("quantization") else ""
    if word in QUANT_WORDS:
        quant = catalog.quant(QUANT_WORDS[word])
    tp = r.get("tensor_parallel_size") or 1
    pp = r.get("pipeline_parallel_size") or 1
    d, w = r.get("derived") or {}, r.get("workload") or {}
    prompt = d.get("mean_input_tokens_per_request") or w.get("input_len")
    out = d.get("mean_output_tokens_per_request") or w.get("output_len")
    guessed = prompt is None or out is None
    prompt, out = prompt or UNKNOWN_LENGTHS[0], out or UNKNOWN_LENGTHS[1]
    eager = "enforce-eager" in notes or "enforce_eager" in (r.get("serve_command") or "") or "--enforce-eager" in (r.get("serve_command") or "")
    mml = r.get("max_model_len") or min(resolved.spec.max_position_embeddings, 32768)
    kv_dtype = r.get("kv_cache_dtype") or "auto"
    settings = Settings(max_model_len=mml, max_num_batched_tokens=r.get("max_num_batched_tokens"),
                        max_num_seqs=r.get("max_num_seqs"), kv_cache_dtype=kv_dtype if kv_dtype.startswith(("fp8", "auto")) else "auto",
                        enforce_eager=eager, gpu_memory_utilization=_gmu(notes))
    exact = resolved.weight_bytes if quant.name == resolved.quant.name else None
    est = estimate(resolved.spec, quant, Device(memory_gib=gpu.memory_gib, gpu=gpu), settings, tp=tp, pp=pp,
                   profile=engine_profile(str(r.get("vllm_version") or "0.11").lstrip("~"), v1=True), exact_weight_bytes=exact)
    cv = 0.0 if (w.get("dataset") or "").startswith("random") else 1.0
    conc = w.get("max_concurrency")
    return dict(model=resolved.spec, wb=est.weights, gpu=gpu, quant=quant, tp=tp, pp=pp, concurrency=conc,
                input_tokens=prompt, output_tokens=out, kv_bytes_per_token=est.capacity.kv_bytes_per_token,
                kv_capacity_tokens=est.capacity.kv_cache_tokens, max_num_seqs=r.get("max_num_seqs"),
                max_num_batched_tokens=r.get("max_num_batched_tokens"),
                num_requests=None if conc else (w.get("num_prompts") or r["results"].get("successful_requests")),
                output_len_cv=cv, enforce_eager=eager), guessed


def _gmu(notes: str) -> float | None:
    m = re.search(r"gpu-memory-utilization (0\.\d+)", notes)
    return float(m.group(1)) if m else None


def evaluate(r: dict) -> Row:
    inputs = record_inputs(r)
    row = Row(id=r["id"], model=r["model_id"][:40], gpu=(r.get("gpu_model") or "")[:14], mode="")
    if isinstance(inputs, str):
        row.note = inputs
        return row
    kw, guessed = inputs
    kw_gpu = kw["gpu"]
    row.family, row.gpu_key = kw["model"].family or kw["model"].id, kw_gpu.name
    s = throughput.serving_speed(kw.pop("model"), kw.pop("wb"), kw.pop("gpu"), kw.pop("quant"), **kw)
    res = r["results"]
    conc = kw["concurrency"]
    # A burst that fits max_num_seqs (record or vLLM default) and the estimated KV cache runs at a known
    # batch, like a fixed concurrency. An estimate of no KV room for a run that did fit leaves it unknown.
    mns = kw["max_num_seqs"] or throughput.engine_defaults(kw_gpu)[0]
    kv_known = kw["kv_capacity_tokens"] is None or kw["kv_capacity_tokens"] > 0
    known_batch = conc is not None or (kv_known and (kw["num_requests"] or 0) <= min(mns, s.batch))
    row.mode = f"c={conc}" if conc is not None else f"burst {kw['num_requests']}→b{s.batch}"
    tpot = res.get("mean_tpot_ms") or res.get("median_tpot_ms")
    if tpot:
        row.per_user = (s.per_user_tokens_per_s, 1000 / tpot)
    if res.get("output_throughput_tok_s"):
        row.output = (s.tokens_per_s, res["output_throughput_tok_s"])
    ttft = res.get("mean_ttft_ms") or res.get("median_ttft_ms")
    if ttft:
        row.ttft = (s.ttft_s * 1000, ttft)
    # Repeated seeds with prefix caching on (vLLM's default): the notes report cache hits of unknown size,
    # so the prompt work behind TTFT is unknown. TTFT is shown, not scored.
    cached = "prefix cache hit" in (r.get("notes") or "").lower()
    row.scored = {"per_user": known_batch, "output": True,
                  "ttft": (conc is not None or known_batch) and not cached and not guessed}
    notes = []
    if cached:
        notes.append("prefix-cache hits (repeat seed): TTFT not scored")
    if guessed:
        notes.append(f"lengths unknown, assumed {UNKNOWN_LENGTHS}: TTFT not scored")
    if kw["enforce_eager"]:
        notes.append("eager")
    if not kv_known:
        notes.append("memory estimate leaves no KV room, but the run fitted: batch unknown")
    if not known_batch:
        notes.append("saturation: TPOT/TTFT shown, not scored")
    row.note = "; ".join(notes)
    return row


def pct(pred: float, actual: float) -> float:
    return 100 * (pred - actual) / actual


def errors(rows: list[Row]) -> dict[str, list[float]]:
    """Signed % errors per metric over the scored rows."""
    out: dict[str, list[float]] = {"per_user": [], "output": [], "ttft": []}
    for r in rows:
        for key in out:
            pair = getattr(r, key)
            if pair and r.scored.get(key):
                out[key].append(pct(*pair))
    return out


def run(path: Path = DEFAULT_RESULTS) -> tuple[list[Row], dict[str, list[float]]]:
    records = json.loads(Path(path).read_text())
    rows = [evaluate(r) for r in records]
    return rows, errors([r for r in rows if r.scored])


def summary(errs: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    """Median and p90 absolute % error per metric."""
    out = {}
    for k, e in errs.items():
        a = sorted(abs(x) for x in e)
        if a:
            out[k] = (statistics.median(a), a[min(len(a) - 1, math.ceil(0.9 * len(a)) - 1)])
    return out


def grouped(rows: list[Row], attr: str) -> dict[str, dict[str, tuple[int, float]]]:
    """Median absolute % error per metric for each model family or GPU (no refit: an overfitted
    constant shows up as one group far off while the others sit near zero)."""
    out: dict[str, dict[str, tuple[int, float]]] = {}
    for key in sorted({getattr(r, attr) for r in rows if r.scored}):
        errs = errors([r for r in rows if r.scored and getattr(r, attr) == key])
        out[key] = {k: (len(v), statistics.median(abs(x) for x in v)) for k, v in errs.items() if v}
    return out


def constants() -> list[str]:
    """Every module-level constant of the speed model, as used."""
    return [f"{k} = {v!r}" for k, v in vars(throughput).items() if k.isupper() and not k.startswith("_")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)
    rows, errs = run(args.results)
    skipped = [r for r in rows if not r.scored]
    if args.verbose:
        f = lambda p: f"{p[0]:.1f}/{p[1]:.1f} ({pct(*p):+.0f}%)" if p else "-"  # noqa: E731
        print(f"{'id':>3} {'model':40} {'gpu':14} {'mode':16} {'per-user tok/s p/a':>24} {'output tok/s p/a':>26} {'TTFT ms p/a':>28}")
        for r in rows:
            if r.scored:
                print(f"{r.id:>3} {r.model:40} {r.gpu:14} {r.mode:16} {f(r.per_user):>24} {f(r.output):>26} {f(r.ttft):>28}  {r.note}")
    print(f"records: {len(rows)}, modelled: {len(rows) - len(skipped)}")
    for r in skipped:
        print(f"  not modelled #{r.id} {r.model}: {r.note}")
    print("constants:")
    for line in constants():
        print(f"  {line}")
    for attr, title in (("family", "model family"), ("gpu_key", "GPU")):
        print(f"median |err| by {title} (n per metric):")
        for key, m in grouped(rows, attr).items():
            cells = "  ".join(f"{k} {n:2}×{med:5.1f}%" for k, (n, med) in m.items())
            print(f"  {key:22} {cells}")
    for key, (med, p90) in summary(errs).items():
        print(f"{key:9} n={len(errs[key]):2}  median |err| {med:5.1f}%  p90 {p90:5.1f}%  (target median ≤ {TARGETS[key]:g}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
