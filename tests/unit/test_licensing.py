"""Licences enforced and openness shown; --vllm-version; a bare config.json planned before download."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit import catalog
from toolkit.errors import LicenseError, PlanError
from toolkit.plan import planner
from toolkit.plan.licensing import verdict
from toolkit.plan.model import Plan
from toolkit.sizing import kv
from toolkit.sizing.engine import check_version
from toolkit.sizing.weights import weight_bytes


def selfhost(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


# ---------------------------------------------------------------- catalog facts


def test_deepseek_licences():
    assert catalog.resolve_model("deepseek-ai/DeepSeek-V3-0324").spec.license == "mit"
    assert catalog.resolve_model("deepseek-ai/DeepSeek-V3.1").spec.license == "mit"
    assert catalog.model("deepseek-ai/DeepSeek-R1").license == "mit"
    assert catalog.resolve_model("deepseek-ai/DeepSeek-R1-0528").spec.license == "mit"
    assert catalog.model("deepseek-ai/DeepSeek-V3").license == "deepseek"  # the original release


def test_llava_is_not_as_open_as_olmo():
    llava, olmo = catalog.model("llava-1.6-mistral-7b").openness, catalog.model("allenai/OLMo-2-1124-7B-Instruct").openness
    assert all(olmo.model_dump().values())
    assert llava != olmo and not llava.training_data


def test_only_fully_open_models_claim_open_training_data():
    open_data = {m.family for m in catalog.models() if m.openness.training_data}
    assert open_data <= {"olmo2"}, open_data


# ---------------------------------------------------------------- verdicts


def _verdict(model: str, **kw):
    spec = catalog.model(model)
    return verdict(spec, catalog.licenses()[spec.license], **{"commercial": True, "monthly_active_users": None, **kw})


def test_llama_mau_clause_is_assessed_at_the_release_date():
    v = _verdict("llama-3.1-8b")
    assert v.allowed
    clause = next(d for d in v.duties if "MAU clause" in d)
    assert "700,000,000" in clause and "2024-07-23" in clause and "release date" in clause
    assert "not an ongoing cap" in clause
    under = _verdict("llama-3.1-8b", monthly_active_users=600_000_000)
    assert under.allowed and any("later growth does not trigger it" in d for d in under.duties)
    over = _verdict("llama-3.1-8b", monthly_active_users=800_000_000)
    assert not over.allowed and "2024-07-23" in over.summary
    assert catalog.licenses()["llama3.3"].mau_measured_at == "2024-12-06"
    assert catalog.licenses()["qwen"].mau_measured_at is None  # Qwen's 100M cap is ongoing


def test_research_licence_refuses_commercial_use():
    v = _verdict("qwen2.5-3b")
    assert not v.allowed and not v.risk_accepted
    with pytest.raises(LicenseError, match="--accept-license-risk"):
        v.require_ok("plan")
    accepted = _verdict("qwen2.5-3b", accept_risk=True)
    assert accepted.risk_accepted and not accepted.allowed
    accepted.require_ok("render")  # acknowledged: passes
    assert _verdict("qwen2.5-3b", commercial=False).allowed


# ---------------------------------------------------------------- the CLI gate


def test_plan_refuses_a_licence_violation(tmp_path):
    out = tmp_path / "plan.yml"
    proc = selfhost("plan", "qwen2.5-3b", "--commercial", "--gpu", "L4", "--out", str(out))
    assert proc.returncode != 0 and not out.exists()
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "--accept-license-risk" in errors[0], proc.stderr
    proc = selfhost("plan", "llama-3.1-8b", "--monthly-active-users", "800000000", "--gpu", "L4", "--out", str(out))
    assert proc.returncode != 0 and not out.exists() and "--accept-license-risk" in proc.stderr


def test_accepted_risk_is_recorded_and_render_refuses_otherwise(tmp_path):
    out = tmp_path / "plan.yml"
    proc = selfhost("plan", "qwen2.5-3b", "--gpu", "L4", "--accept-license-risk", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    plan = Plan.load(out)
    assert plan.license.risk_accepted and not plan.license.allowed
    plan.require_license_ok("render")

    from toolkit.render.bundle import render

    unacknowledged = plan.model_copy(update={"license": plan.license.model_copy(update={"risk_accepted": False})})
    bundle = tmp_path / "bundle"
    with pytest.raises(LicenseError, match="refusing to render"):
        render(unacknowledged, None, bundle)  # refused before the site is even looked at
    assert not bundle.exists()

    unacknowledged.dump(out)
    proc = selfhost("render", str(out), "-i", str(tmp_path / "site"), "--out", str(bundle))
    assert proc.returncode != 0 and not bundle.exists()
    assert "refusing to render" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- --vllm-version


def test_vllm_version_selects_a_profile_and_is_validated():
    assert check_version("v0.10.2") == "0.10.2" and check_version("0.8") == "0.8.0"
    with pytest.raises(PlanError, match="0.25–0.32"):
        check_version("0.99.0")
    result = planner.plan(planner.PlanRequest(model="llama-3.1-8b", gpus=["L4"], tp=1, vllm_version="0.10.2"))
    assert result.plan.runtime.vllm_version == "0.10.2"
    assert result.plan.runtime.image == "vllm/vllm-openai:v0.10.2"
    assert result.plan.vllm.gpu_memory_utilization == 0.90  # before 0.25 the default was 0.90


def test_vllm_version_flag_errors_in_one_line():
    proc = selfhost("plan", "llama-3.1-8b", "--vllm-version", "9.9", "--no-write")
    assert proc.returncode != 0
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()][0].startswith("error: no engine profile")


def test_version_names_the_vllm_release():
    from toolkit.plan.vllm_args import VLLM_VERSION

    proc = selfhost("--version")
    assert proc.returncode == 0 and f"vLLM {VLLM_VERSION}" in proc.stdout


# ---------------------------------------------------------------- a bare config.json


QWEN25_7B = {
    "_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "sliding_window": 131072,
    "use_sliding_window": False,
    "max_window_layers": 28,
}


def _config(tmp_path: Path, **extra) -> Path:
    file = tmp_path / "config.json"
    file.write_text(json.dumps({**QWEN25_7B, **extra}))
    return file


def test_bare_config_json_matches_the_catalog_entry(tmp_path):
    r = catalog.resolve_model(str(_config(tmp_path)))
    ref = catalog.model("Qwen/Qwen2.5-7B-Instruct")
    assert r.weight_bytes is None and r.source == "local" and r.repo_id == "Qwen/Qwen2.5-7B-Instruct"
    assert r.spec.license == ref.license  # borrowed from the matching catalog entry
    none = catalog.quant("none")
    assert weight_bytes(r.spec, none).total == pytest.approx(weight_bytes(ref, none).total, rel=0.02)
    assert r.spec.params_b == pytest.approx(ref.params_b, rel=0.02)
    per_tok = lambda s: kv.bytes_per_token(s, tp=1, pp=1, b_kv=2)  # noqa: E731
    assert per_tok(r.spec) == pytest.approx(per_tok(ref), rel=0.02)


def test_bare_config_json_plans_through_the_cli(tmp_path):
    _config(tmp_path)
    proc = selfhost("plan", "./config.json", "--gpu", "L4", "--tp", "1", "--json", "--no-write", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert any("config.json alone" in w for w in report["warnings"])


@pytest.mark.parametrize(
    "qc,expected",
    [
        ({"quant_method": "awq", "bits": 4, "group_size": 128}, "awq"),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128}, "gptq"),
        ({"quant_method": "fp8", "activation_scheme": "dynamic"}, "fp8"),
        ({"quant_method": "mxfp4"}, "mxfp4"),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "bitsandbytes"),
        ({"quant_method": "compressed-tensors",
          "config_groups": {"g": {"weights": {"num_bits": 4, "type": "int", "group_size": 128}}}}, "compressed-tensors"),
    ],
)
def test_bare_config_json_quantization(tmp_path, qc, expected):
    r = catalog.resolve_model(str(_config(tmp_path, quantization_config=qc)))
    assert r.quant.name == expected and r.prequantized and r.spec.native_quantization == expected


def test_bare_config_json_dtype(tmp_path):
    r = catalog.resolve_model(str(_config(tmp_path, torch_dtype=None, dtype="float16")))
    assert r.spec.torch_dtype == "float16"
