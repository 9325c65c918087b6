"""LoRA on the real vLLM CPU build: the adapter selfhost plans and checks is served, and changes the answers.

A tiny adapter for the tiny model is made offline with PEFT (tests/e2e/infra/tiny_lora.py), checked by
`toolkit.catalog.adapters`, planned by `selfhost plan --lora`, and served by `vllm.entrypoints.openai.api_server`
with the LoRA flags the plan renders (loopback only). The LoRA buffers vLLM allocates are measured in a
separate engine and compared with toolkit/sizing/lora.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import START_TIMEOUT_S, _free_port, _healthy, _need_vllm, _stop, _tail

pytestmark = pytest.mark.integration

ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
PROMPT = "hello world the model"


@pytest.fixture(scope="module")
def tiny_lora_dir(tiny_model_dir) -> Path:
    pytest.importorskip("peft", reason="peft is in the test extra (pip install -e '.[test]')")
    from tests.e2e.infra.tiny_lora import ensure_tiny_lora

    return ensure_tiny_lora()


@pytest.fixture(scope="module")
def lora_plan(tiny_model_dir, tiny_lora_dir):
    from toolkit.plan.planner import PlanRequest, plan

    return plan(PlanRequest(model=str(tiny_model_dir), device="cpu", context=512, name="tiny",
                            loras=[("tiny-lora", str(tiny_lora_dir))], accept_license_risk=True)).plan


@pytest.fixture(scope="module")
def lora_server(tiny_model_dir, tiny_lora_dir, lora_plan):
    """Base URL of a vLLM CPU server started with the plan's LoRA flags (container paths → the local dirs)."""
    _need_vllm()
    v = lora_plan.vllm
    modules = [f"{a.name}={a.source}" for a in lora_plan.adapters]  # the deploy mounts a.source at a.path
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile(prefix="vllm-lora-", suffix=".log", delete=False)
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model_dir),
            "--served-model-name", v.served_model_name, "--max-model-len", str(v.max_model_len),
            "--host", "127.0.0.1", "--port", str(port), "--enable-lora", "--lora-modules", *modules,
            "--max-loras", str(v.max_loras), "--max-lora-rank", str(v.max_lora_rank)]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ENV},
                            start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"vLLM with --enable-lora exited with {proc.returncode}:\n{_tail(log.name)}")
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM with --enable-lora not healthy after {START_TIMEOUT_S:.0f} s:\n{_tail(log.name)}")
            time.sleep(1)
        yield url, log.name
    finally:
        _stop(proc)
        log.close()


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_the_plan_checks_the_adapter_and_renders_lora_flags(lora_plan, tiny_lora_dir):
    [a] = lora_plan.adapters
    assert (a.name, a.rank, a.source, a.path) == ("tiny-lora", 8, str(tiny_lora_dir), "/adapters/tiny-lora")
    argv = lora_plan.vllm.to_argv()
    assert ["--enable-lora", "--lora-modules", "tiny-lora=/adapters/tiny-lora", "--max-loras", "1",
            "--max-lora-rank", "8"] == argv[argv.index("--enable-lora"):]


def test_lora_flags_parse_with_vllms_own_parser(lora_plan):
    from tests.integration.test_vllm_arg_contract import _vllm_parser

    _, parser = _vllm_parser()
    args = parser.parse_args(lora_plan.vllm.to_argv())
    assert args.enable_lora is True
    assert args.max_loras == 1 and args.max_lora_rank == 8
    [module] = args.lora_modules
    assert (module.name, module.path) == ("tiny-lora", "/adapters/tiny-lora")


def test_adapter_is_served_and_changes_the_answer(lora_server, lora_plan):
    url, log = lora_server
    status, models = 0, {}
    with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as resp:
        status, models = resp.status, json.loads(resp.read())
    assert status == 200
    assert {"tiny", "tiny-lora"} <= {m["id"] for m in models["data"]}
    answers = {}
    for model in ("tiny", "tiny-lora"):
        status, body = _post(f"{url}/v1/completions", {"model": model, "prompt": PROMPT, "max_tokens": 12,
                                                        "temperature": 0, "seed": 0})
        assert status == 200, body
        answers[model] = body["choices"][0]["text"]
    print(f"\nbase      : {answers['tiny']!r}\ntiny-lora : {answers['tiny-lora']!r}")
    assert answers["tiny"] != answers["tiny-lora"]
    # deterministic at temperature 0: the same adapter request gives the same answer again
    assert _post(f"{url}/v1/completions", {"model": "tiny-lora", "prompt": PROMPT, "max_tokens": 12,
                                           "temperature": 0})[1]["choices"][0]["text"] == answers["tiny-lora"]
    assert "Loaded new LoRA adapter: name 'tiny-lora'" in Path(log).read_text(errors="replace")


def test_unknown_adapter_name_is_a_404_not_a_hub_lookup(lora_server):
    url, _ = lora_server
    status, _ = _post(f"{url}/v1/completions", {"model": "meta-llama/not-an-adapter", "prompt": PROMPT, "max_tokens": 2})
    assert status == 404


MEASURE = textwrap.dedent("""
    import json, os, sys
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM

    def lora_bytes(model):
        out = {}
        for name, mod in model.named_modules():
            for attr in ("lora_a_stacked", "lora_b_stacked"):
                t = getattr(mod, attr, None)
                if t is None:
                    continue
                key = type(mod).__name__ + ":" + name.rsplit(".", 1)[-1]
                out[key] = out.get(key, 0) + sum(x.numel() * x.element_size() for x in (t if isinstance(t, (tuple, list)) else [t]))
        return out

    if __name__ == "__main__":
        llm = LLM(model=sys.argv[1], enable_lora=True, max_lora_rank=int(sys.argv[2]), max_loras=int(sys.argv[3]),
                  max_model_len=512, distributed_executor_backend="uni")
        print("LORA-BYTES " + json.dumps(llm.apply_model(lora_bytes)[0]))
""")


def test_lora_buffers_vllm_allocates_match_the_plan(tiny_model_dir, tmp_path):
    """vLLM's CPU build logs no model/KV memory for LoRA (the KV space is fixed by VLLM_CPU_KVCACHE_SPACE), so the
    buffers are summed inside a real engine instead: every lora_a/b_stacked tensor, per wrapper."""
    _need_vllm()
    from toolkit.catalog.checkpoint import from_directory
    from toolkit.sizing.lora import LoraSettings, lora_memory

    script = tmp_path / "measure.py"
    script.write_text(MEASURE)
    proc = subprocess.run([sys.executable, str(script), str(tiny_model_dir), "8", "2"], capture_output=True, text=True,
                          env={**os.environ, **ENV}, timeout=START_TIMEOUT_S, cwd=tmp_path)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("LORA-BYTES ")]
    assert lines, f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    measured = json.loads(lines[-1].split(" ", 1)[1])
    print("\nvLLM allocated:", measured)
    plan = lora_memory(from_directory(tiny_model_dir).spec, LoraSettings(max_loras=2, max_lora_rank=8))
    assert sum(measured.values()) == plan.buffers_bytes
    rows = dict(plan.rows)
    for wrapper, module in (("MergedQKVParallelLinearWithLoRA", "qkv_proj"), ("RowParallelLinearWithLoRA", "o_proj"),
                            ("MergedColumnParallelLinearWithLoRA", "gate_up_proj"), ("RowParallelLinearWithLoRA", "down_proj")):
        assert measured[f"{wrapper}:{module}"] == rows[module]
    assert (measured["VocabParallelEmbeddingWithLoRA:embed_tokens"] + measured["LogitsProcessorWithLoRA:logits_processor"]
            == rows["embed_tokens + lm_head"])
