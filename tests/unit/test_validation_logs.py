"""Every start-up log in shared/validation whose model is in the catalog, checked record by record.

A few records carry conditions the engine model cannot see from the record's fields; they are
listed with the reason and run as strict xfails, so a fix that makes them pass is noticed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT.parent / "shared" / "validation" / "vllm_startup_logs.json"
_spec = importlib.util.spec_from_file_location("sizing_accuracy", ROOT / "bench" / "sizing_accuracy.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["sizing_accuracy"] = bench  # dataclasses look their module up while the class is built
_spec.loader.exec_module(bench)

RECORDS = json.loads(LOGS.read_text()) if LOGS.exists() else []
OUTSIDE_MODEL = {
    19: "max_num_seqs is not logged; a 2.12 GiB activation peak implies far fewer sampler rows than the 1024 default",
    43: "TP=8 MoE shard padding / replicated MLA projections in the V0 fused-MoE path (+0.31 GiB) are not modelled",
    47: "Unsloth 'dynamic' 4-bit leaves selected layers unquantized; LoRA buffers are loaded too",
    23: "vGPU (A40-48Q) reserves 4.09 GiB outside PyTorch; nothing in the record says vGPU overhead",
    31: "expert-parallel run spanning 8 GPUs (27.7 GiB/GPU) while the record states TP=4 only",
    49: "Meta's FP8 checkpoint keeps attention in bf16, and the log stops before the failure's cause",
}


def _rows():
    for r in RECORDS:
        row = bench.evaluate(r)
        if row is not None:
            marks = [pytest.mark.xfail(reason=OUTSIDE_MODEL[r["id"]], strict=True)] if r["id"] in OUTSIDE_MODEL else []
            yield pytest.param(row, id=f"{r['id']}-{r['model_id'][:40]}", marks=marks)


def test_logs_present():
    assert LOGS.exists(), f"{LOGS} is missing: CI clones shared/ beside the repo"
    assert sum(1 for _ in _rows()) >= 20


@pytest.mark.parametrize("row", list(_rows()))
def test_record(row):
    if row.weights:
        predicted, actual = row.weights
        assert predicted == pytest.approx(actual, rel=0.03), "weights per GPU"
    if row.kv:
        predicted, actual, total = row.kv
        assert abs(predicted - actual) <= 0.03 * total + 0.05, "KV cache within 3% of GPU memory"
    if row.verdict:
        assert row.verdict[0] == row.verdict[1], "fit verdict"
