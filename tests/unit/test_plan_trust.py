"""Regressions for "Trust nothing that comes in" (plan side): each defect reproduced, then refused in one line."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from safetensors.numpy import save_file
from click.testing import CliRunner

from toolkit import catalog, cli
from toolkit.catalog.files import load_yaml, read_text_bounded
from toolkit.catalog.resolve import _prequantized
from toolkit.errors import CatalogError, ConfigError, PlanError, SelfhostError
from toolkit.plan import planner
from toolkit.plan.model import Plan

BILLION_LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
)


_COMMAND = None


def run(*args: str) -> tuple[int, str]:
    """The CLI in-process, exactly as `toolkit.cli.main` reports: (exit code, what the user sees)."""
    global _COMMAND
    if _COMMAND is None:
        cli._register()
        _COMMAND = typer.main.get_command(cli.app)
    res = CliRunner().invoke(_COMMAND, list(args))
    exc = res.exception
    if isinstance(exc, SelfhostError):
        return exc.exit_code, "error: " + exc.message + (f"\nTo fix: {exc.fix}" if exc.fix else "")
    if exc is not None and not isinstance(exc, SystemExit):
        return 99, f"internal error: {exc!r}"
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def plan_8b() -> dict:
    return planner.plan(planner.PlanRequest(model="llama-3.1-8b", gpus=["L4"])).plan.model_dump(mode="json")


def _edit(data: dict, key: str, value) -> dict:
    out = copy.deepcopy(data)
    cur = out
    *path, last = key.split(".")
    for k in path:
        cur = cur[k]
    cur[last] = value
    return out


def _load(tmp_path: Path, data: dict) -> Plan:
    f = tmp_path / "plan.yml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    return Plan.load(f)


# ---------------------------------------------------------------- hand edits are checked for meaning


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("vllm.gpu_memory_utilization", 7, "vllm.gpu_memory_utilization: 7.0 is outside (0, 1]"),
        ("vllm.max_model_len", 131072, "vllm.max_model_len: 131072 exceeds what the KV cache holds"),
        ("vllm.port", 99999, "vllm.port: 99999 is outside [1, 65535]"),
        ("schema_version", 99, "schema_version: 99 is not supported"),
        ("vllm.gpu_memory_utilization", float("nan"), "must be a finite number"),
        ("name", "{{ lookup('pipe','id') }}", "name:"),
        ("vllm.served_model_name", "-o", "vllm.served_model_name"),
        ("vllm.model", "/models/../../etc", "vllm.model"),
        ("model.quantization", "awq", "needs a pre-quantized checkpoint"),
        ("vllm.quantization", "awq", "does not match model.quantization"),
        ("runtime.env", {"LD_PRELOAD": "/tmp/x.so\nrm -rf /"}, "runtime.env"),
    ],
)
def test_hand_edits_are_checked(tmp_path, plan_8b, key, value, needle):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, _edit(plan_8b, key, value))
    message = exc.value.message
    assert needle in message and str(tmp_path / "plan.yml") in message
    assert all(len(line) < 300 for line in message.splitlines())


def test_tp_times_pp_must_be_the_gpus_per_replica(tmp_path, plan_8b):
    edited = _edit(_edit(plan_8b, "vllm.tensor_parallel_size", 3), "hardware.tensor_parallel_size", 3)
    with pytest.raises(ConfigError, match=r"hardware.gpus_per_replica: 1 is not tensor_parallel_size"):
        _load(tmp_path, edited)


def test_max_model_len_beyond_the_model(tmp_path, plan_8b):
    edited = _edit(_edit(plan_8b, "model.max_position_embeddings", 4096), "capacity.max_model_len_possible", 10**6)
    with pytest.raises(ConfigError, match="exceeds the model's maximum"):
        _load(tmp_path, edited)


def test_plan_is_re_sized_and_refused_when_it_no_longer_fits(tmp_path, plan_8b):
    with pytest.raises(ConfigError, match="no longer fits") as exc:
        _load(tmp_path, _edit(plan_8b, "vllm.gpu_memory_utilization", 0.3))
    assert "selfhost plan" in exc.value.fix


def test_long_values_are_never_echoed(tmp_path, plan_8b):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, _edit(plan_8b, "memory.total_gib", "x" * 100_000))
    assert len(exc.value.message) < 300
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, {**plan_8b, **{f"k{i}" * 50: i for i in range(1000)}})
    assert len(exc.value.message.splitlines()) <= 9 and len(exc.value.message) < 3000


def test_generated_plan_loads_unchanged(tmp_path, plan_8b):
    assert _load(tmp_path, plan_8b).model_dump(mode="json") == plan_8b


# ---------------------------------------------------------------- plans that can start


def test_awq_of_a_bf16_base_plans_the_published_awq_repo():
    plan = planner.plan(planner.PlanRequest(model="llama-3.1-70b", quant="awq")).plan
    assert plan.model.id == "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"
    assert plan.model.quantization == "awq" and "awq" in plan.vllm.model
    Plan.from_dict(plan.model_dump(mode="json"))  # and it passes its own load checks


def test_awq_without_a_known_repo_is_refused_with_the_fix():
    with pytest.raises(PlanError, match="vLLM cannot quantize") as exc:
        planner.plan(planner.PlanRequest(model="llama-3.3-70b", quant="awq"))
    assert "pre-quantized repo id or local directory" in exc.value.fix and "--quant fp8" in exc.value.fix


def test_online_fp8_always_carries_the_flag(tmp_path):
    plan = planner.plan(planner.PlanRequest(model="llama-3.1-8b", quant="fp8", gpus=["L40S"])).plan
    assert plan.vllm.quantization == "fp8" and "--quantization" in plan.vllm.to_argv()
    with pytest.raises(ConfigError, match="vllm.quantization: must be 'fp8'"):
        _load(tmp_path, _edit(plan.model_dump(mode="json"), "vllm.quantization", None))


def test_every_listed_prequantized_repo_resolves_to_its_base():
    for base, repos in _prequantized().items():
        for quant, repo in repos.items():
            r = catalog.resolve_model(repo)
            assert (r.base_id.lower(), r.quant.name, r.prequantized) == (base, quant, True), repo


# ---------------------------------------------------------------- checkpoints


def _ckpt(root: Path, **patch) -> Path:
    root.mkdir()
    cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama", num_hidden_layers=32, hidden_size=4096,
               num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336, vocab_size=128256,
               max_position_embeddings=131072, torch_dtype="bfloat16")
    (root / "config.json").write_text(json.dumps({**cfg, **patch}))
    save_file({"model.embed_tokens.weight": np.zeros((4, 4), dtype=np.float16)}, str(root / "model.safetensors"))
    return root


def test_tiny_self_consistent_header_is_refused(tmp_path):
    code, text = run("plan", str(_ckpt(tmp_path / "tiny")), "--no-write")
    assert code != 0 and "safetensors hold 0.00 GiB" in text and "internal error" not in text


@pytest.mark.parametrize("patch", [{"num_hidden_layers": "eighty"}, {"num_attention_heads": 0},
                                   {"hidden_size": -5}, {"vocab_size": [1]}])
def test_bad_config_values_are_one_line(tmp_path, patch):
    with pytest.raises(CatalogError, match="not a usable model geometry") as exc:
        catalog.resolve_model(str(_ckpt(tmp_path / "m", **patch)))
    assert "\n" not in exc.value.message


# ---------------------------------------------------------------- command-line numbers


@pytest.mark.parametrize("args", [
    ["--context", "1"], ["--budget", "nan"], ["--tokens-per-second", "nan"], ["--monthly-active-users", "-5"],
    ["--requests-per-month", "1000000000000000"], ["--top", "0"], ["--gpu-memory-gib", "nan"],
    ["--gpu-memory-gib", "inf"], ["--cpu-kv-space-gib", "-1"], ["--name", "../etc"],
])
def test_cli_numbers_within_sense(tmp_path, args):
    code, text = run("plan", "llama-3.2-1b", "--gpu", "L4", "--json", "-o", str(tmp_path / "p.yml"), *args)
    assert code not in (0, 99), text
    assert text.startswith("error: ") and len(text.strip().splitlines()) <= 3, text
    assert not (tmp_path / "p.yml").exists()


# ---------------------------------------------------------------- unbounded input


def test_billion_laughs_plan_is_refused_quickly(tmp_path):
    f = tmp_path / "plan.yml"
    f.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 400
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases|expands") as exc:
        Plan.load(f)
    assert time.perf_counter() - start < 1 and len(exc.value.message) < 200


def test_api_prices_from_dev_zero_is_refused(tmp_path):
    code, text = run("plan", "llama-3.2-1b", "--gpu", "L4", "--no-write", "--api-prices", "/dev/zero")
    assert code == 1 and "not a regular file" in text


def test_huge_plan_file_is_refused_without_parsing(tmp_path):
    f = tmp_path / "plan.yml"
    with f.open("w") as out:
        out.write("warnings:\n")
        out.write("- aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n" * 750_000)  # ~50 MB
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="too large"):
        Plan.load(f)
    assert time.perf_counter() - start < 1


def test_plan_path_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        Plan.load(tmp_path)


def test_reader_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for p in (fifo, Path("/dev/zero"), tmp_path):
        with pytest.raises(ConfigError):
            read_text_bounded(p, 1000)
    with pytest.raises(ConfigError, match="recursive|refers to itself"):
        load_yaml("a: &a [*a]")


def test_out_that_is_a_directory_or_unwritable(tmp_path):
    code, text = run("plan", "llama-3.2-1b", "--gpu", "L4", "--json", "-o", str(tmp_path))
    assert code == 1 and "is a directory" in text
    code, text = run("plan", "llama-3.2-1b", "--gpu", "L4", "--json", "-o", str(tmp_path / "missing" / "plan.yml"))
    assert code == 1 and "does not exist" in text
    code, text = run("plan", "llama-3.2-1b", "--gpu", "L4", "--json", "-o", "/proc/selfhost-plan.yml")
    assert code == 1 and "cannot write the plan" in text


# ---------------------------------------------------------------- data loss


def test_plan_never_overwrites_what_it_did_not_write(tmp_path):
    out = tmp_path / "plan.yml"
    assert run("plan", "llama-3.2-1b", "--gpu", "L4", "--json", "-o", str(out))[0] == 0
    assert Plan.is_unchanged_output(out)
    assert run("plan", "llama-3.2-1b", "--gpu", "L4", "--json", "-o", str(out))[0] == 0  # an unchanged plan it wrote
    out.write_text(out.read_text().replace("max_num_seqs: 32", "max_num_seqs: 16"))  # a hand edit
    edited = out.read_text()
    code, text = run("plan", "llama-3.2-1b", "--gpu", "L4", "--json", "-o", str(out))
    assert code == 1 and "--force" in text and out.read_text() == edited
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    code, text = run("plan", "llama-3.2-1b", "--gpu", "L4", "--json", "-o", str(notes))
    assert code == 1 and notes.read_text() == "mine"
    assert run("plan", "llama-3.2-1b", "--gpu", "L4", "--json", "-o", str(out), "--force")[0] == 0
    assert Plan.is_unchanged_output(out)


def test_force_never_replaces_a_device_or_fifo(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, text = run("plan", "llama-3.2-1b", "--gpu", "L4", "--json", "-o", str(fifo), "--force")
    assert code == 1 and "not a regular file" in text and fifo.is_fifo()
