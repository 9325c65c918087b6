"""`selfhost plan` through the real CLI entry point (a subprocess, as a user runs it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from toolkit.plan.model import Plan

FAILURES = yaml.safe_load((Path(__file__).parent / "cases" / "sizing" / "failures.yml").read_text())


def selfhost(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("case", FAILURES, ids=lambda c: " ".join(c["args"][1:4]))
def test_bad_input_is_a_clear_error(case, tmp_path):
    proc = selfhost(*case["args"], "--out", str(tmp_path / "plan.yml"), cwd=tmp_path)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in text
    for needle in case["contains"]:
        assert needle in text, text
    if "json_fits" in case:
        assert json.loads(proc.stdout)["fits"] is case["json_fits"]
    assert not (tmp_path / "plan.yml").exists(), "a failed plan must not write a plan file"


def test_search_writes_a_valid_plan(tmp_path):
    out = tmp_path / "plan.yml"
    proc = selfhost("plan", "llama-3.1-70b", "--context", "32768", "--concurrency", "50",
                    "--requests-per-month", "3000000", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["fits"] and report["options"]
    plan = Plan.load(out)
    assert plan.vllm.max_model_len == 32768
    assert plan.capacity.max_concurrency >= 50
    assert plan.cost and plan.cost.break_even_months
    assert "700,000,000" in " ".join(plan.license.duties)


def test_exact_layout_json_contract():
    proc = selfhost("plan", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100", "--tp", "1", "--max-model-len", "16000",
                    "--gpu-memory-utilization", "0.9", "--json", "--no-write")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    for key in ("weights_gib", "activation_gib", "non_torch_gib", "kv_cache_gib"):
        assert isinstance(r["per_gpu"][key], (int, float))
    assert r["fits"] is True and r["reasons"] == []
    # The same layout started for real (shared/validation/vllm_startup_logs.json record 15, H100-80GB, TP1,
    # max_model_len 16000, gmu 0.90): "Model loading took: 14.99 GiB … Available KV cache memory: 51.38 GiB".
    # KV per token, bf16: 2 × 32 layers × 8 KV heads × 128 × 2 B = 128 KiB → 51.38 GiB / 128 KiB = 420,905 tokens;
    # vLLM's "maximum concurrency" at 16,000 tokens a request = 420,905 / 16,000 = 26.3.
    gpu = r["per_gpu"]
    assert gpu["weights_gib"] == pytest.approx(14.99, rel=0.03)
    assert abs(gpu["kv_cache_gib"] - 51.38) <= 0.03 * 79.18  # the validation gate: 3 % of the GPU's memory
    assert r["kv_cache_tokens"] == pytest.approx(420_905, rel=0.05)
    assert r["max_concurrency"] == pytest.approx(26.3, rel=0.05)
    assert "--max-model-len" in r["vllm_argv"]


def test_plan_file_rejects_unknown_keys_with_did_you_mean(tmp_path):
    out = tmp_path / "plan.yml"
    assert selfhost("plan", "qwen2.5-0.5b", "--gpu", "L4", "--out", str(out)).returncode == 0
    data = yaml.safe_load(out.read_text())
    data["vllm"]["max_model_length"] = data["vllm"].pop("max_model_len")
    out.write_text(yaml.safe_dump(data))
    with pytest.raises(Exception) as err:
        Plan.load(out)
    assert "did you mean 'max_model_len'" in str(err.value)


def test_explain_lists_provenance():
    proc = selfhost("plan", "qwen2.5-7b", "--gpu", "L4", "--explain", "--json", "--no-write")
    rows = json.loads(proc.stdout)["explain"]
    assert {r["provenance"] for r in rows} >= {"read", "derived", "assumed", "calibrated"}


def test_cpu_plan(tmp_path):
    out = tmp_path / "plan.yml"
    proc = selfhost("plan", "qwen2.5-0.5b", "--device", "cpu", "--context", "2048", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    plan = Plan.load(out)
    assert plan.hardware.device == "cpu" and plan.vllm.gpu_memory_utilization is None
    assert "VLLM_CPU_KVCACHE_SPACE" in plan.runtime.env


HEAVY_PROBE = """
import runpy, sys
sys.argv = ["selfhost", "plan", "llama-3.1-8b", "--gpu", "L4", "--no-write", "--json"]
try:
    runpy.run_module("toolkit", run_name="__main__")
except SystemExit:
    pass
heavy = [m for m in ("ansible", "ansible_runner", "docker", "torch", "vllm") if m in sys.modules]
sys.stderr.write("HEAVY:" + ",".join(heavy))
"""


def test_plan_does_not_import_heavy_modules():
    proc = subprocess.run([sys.executable, "-c", HEAVY_PROBE], capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().endswith("HEAVY:"), proc.stderr[-500:]
