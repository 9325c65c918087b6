"""Render stage: site folders, templates, PKI and golden bundles (no network, no Docker).

Golden bundles live in tests/unit/golden/<case>/ (plan.yml + expected/). Refresh them with
`UPDATE_GOLDEN=1 pytest tests/unit/test_render.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from toolkit import pki
from toolkit.errors import ConfigError, RenderError
from toolkit.plan import Plan
from toolkit.render import render
from toolkit.site import init_site, load_site
from toolkit.templates import Templates, list_templates, packaged_dir

GOLDEN = Path(__file__).parent / "golden"
UPDATE = bool(os.environ.get("UPDATE_GOLDEN"))
# Compared byte for byte; project/ is a verbatim copy of playbooks/ (owned elsewhere).
COMPARED_DIRS = ("env", "files", "inventory", "prometheus")


def _plan(name, *, model, served, weights_gib, max_pos, hardware, vllm, runtime, memory, capacity) -> Plan:
    return Plan.model_validate({
        "toolkit_version": "0.1.0",
        "name": name,
        "model": {"id": model, "base_id": model, "served_model_name": served, "weights_gib": weights_gib,
                  "max_position_embeddings": max_pos},
        "hardware": hardware,
        "vllm": {"served_model_name": served, **vllm},
        "runtime": {"vllm_version": "0.32.0", **runtime},
        "memory": memory,
        "capacity": capacity,
        "performance": {"decode_tokens_per_s": 50.0, "aggregate_tokens_per_s": 800.0, "per_user_tokens_per_s": 25.0,
                        "at_concurrency": 32, "assumptions": ["illustrative numbers for the golden test"]},
        "license": {"license": "llama3.1", "allowed": True, "summary": "allowed", "duties": [],
                    "openness": {"weights": True}},
    })


def _mem(total, requested, weights, kv):
    return {"total_gib": total, "requested_gib": requested, "weights_gib": weights, "activation_gib": 1.0,
            "non_torch_gib": 0.5, "cuda_graph_gib": 0.5, "kv_cache_gib": kv, "headroom_gib": 1.0}


def _cap(max_len, tokens):
    return {"kv_cache_tokens": tokens, "max_model_len": max_len, "max_model_len_possible": tokens,
            "max_concurrency": round(tokens / max_len, 2), "kv_bytes_per_token": 131072}


CASES = {
    "gpu-tp1-llama8b-l40s": lambda: _plan(
        "llama-8b", model="meta-llama/Llama-3.1-8B-Instruct", served="llama-3.1-8b", weights_gib=14.96,
        max_pos=131072,
        hardware={"device": "gpu", "gpu": "L40S", "memory_gib": 44.39},
        vllm={"model": "/models/llama-3.1-8b", "max_model_len": 32768, "gpu_memory_utilization": 0.9,
              "max_num_seqs": 64, "max_num_batched_tokens": 8192},
        runtime={"image": "vllm/vllm-openai:v0.32.0", "load_time_s": 180},
        memory=_mem(44.39, 39.95, 14.96, 22.99), capacity=_cap(32768, 188000)),
    "gpu-tp4-llama70b-h100": lambda: _plan(
        "llama-70b", model="meta-llama/Llama-3.1-70B-Instruct", served="llama-3.1-70b", weights_gib=131.4,
        max_pos=131072,
        hardware={"device": "gpu", "gpu": "H100-SXM-80GB", "memory_gib": 79.19, "tensor_parallel_size": 4,
                  "gpus_per_replica": 4},
        vllm={"model": "/models/llama-3.1-70b", "tensor_parallel_size": 4, "max_model_len": 65536,
              "gpu_memory_utilization": 0.92, "max_num_seqs": 128, "max_num_batched_tokens": 8192},
        runtime={"image": "vllm/vllm-openai:v0.32.0", "load_time_s": 900, "env": {"NCCL_P2P_LEVEL": "NVL"}},
        memory=_mem(79.19, 72.85, 32.85, 36.5), capacity=_cap(65536, 478000)),
    "cpu-tiny": lambda: _plan(
        "tiny-cpu", model="selfhost-test/tiny-llama", served="tiny", weights_gib=0.01, max_pos=2048,
        hardware={"device": "cpu", "memory_gib": 1.0},
        vllm={"model": "/models/tiny", "max_model_len": 2048, "max_num_seqs": 4, "max_num_batched_tokens": 2048},
        runtime={"image": "selfhost-test/vllm-cpu:0.32.0", "load_time_s": 60, "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}},
        memory=_mem(1.0, 1.0, 0.01, 0.9), capacity=_cap(2048, 16384)),
}

HOSTS = {
    "gpu-tp1-llama8b-l40s": {"gpu-01": {"ansible_host": "10.0.0.11"}, "gpu-02": {"ansible_host": "10.0.0.12"}},
    "gpu-tp4-llama70b-h100": {"hgx-01": {"ansible_host": "hgx-01.lab.internal"}},
    "cpu-tiny": {"testhost-1": {"ansible_host": "127.0.0.1", "ansible_port": 2222}},
}


def _site(tmp: Path, hosts: dict, group_vars: str = "ansible_user: deploy\n") -> Path:
    site = tmp / "site"
    init_site(site)
    (site / "hosts.yml").write_text(yaml.safe_dump({"inference": {"hosts": hosts}}))
    (site / "group_vars" / "inference.yml").write_text(group_vars)
    return site


def _weights(tmp: Path) -> Path:
    w = tmp / "weights"
    (w / "sub").mkdir(parents=True)
    (w / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}\n')
    (w / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (w / "sub" / "tokenizer.json").write_text("{}\n")
    (w / ".cache").mkdir()
    (w / ".cache" / "lock").write_text("ignored\n")
    return w


def _normalise(text: str, tmp: Path) -> str:
    return text.replace(str(tmp.absolute()), "<TMP>")


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


# ---------------------------------------------------------------- golden bundles

@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_bundle(case, tmp):
    plan = CASES[case]()
    case_dir = GOLDEN / case
    if UPDATE:
        case_dir.mkdir(parents=True, exist_ok=True)
        plan.dump(case_dir / "plan.yml")
    assert Plan.load(case_dir / "plan.yml") == plan, "plan.yml is stale: run with UPDATE_GOLDEN=1"

    site = _site(tmp, HOSTS[case])
    bundle = render(plan, load_site(site), tmp / "build" / plan.name, weights_source=_weights(tmp))

    got = {}
    for rel in bundle.files:
        if rel.split("/")[0] in COMPARED_DIRS:
            got[rel] = _normalise((bundle.path / rel).read_text(), tmp)
    lock = yaml.safe_load((bundle.path / "selfhost.lock.yml").read_text())
    lock["playbooks_sha256"] = "<PLAYBOOKS>"
    got["selfhost.lock.yml"] = yaml.safe_dump(lock, sort_keys=False)

    expected_dir = case_dir / "expected"
    if UPDATE:
        shutil.rmtree(expected_dir, ignore_errors=True)
        for rel, text in got.items():
            (expected_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / rel).write_text(text)
    expected = {p.relative_to(expected_dir).as_posix(): p.read_text()
                for p in sorted(expected_dir.rglob("*")) if p.is_file()}
    assert sorted(got) == sorted(expected), "file list changed: run with UPDATE_GOLDEN=1 and review"
    for rel in expected:
        assert got[rel] == expected[rel], f"{case}/{rel} differs: run with UPDATE_GOLDEN=1 and review the diff"


def test_bundle_is_deterministic(tmp):
    plan = CASES["cpu-tiny"]()
    site = load_site(_site(tmp, HOSTS["cpu-tiny"]))
    weights = _weights(tmp)
    a = render(plan, site, tmp / "a", weights_source=weights)
    b = render(plan, site, tmp / "b", weights_source=weights)
    assert a.files == b.files
    for rel in a.files:
        assert (a.path / rel).read_bytes() == (b.path / rel).read_bytes(), rel


def test_bundle_layout_and_vars(tmp):
    plan = CASES["gpu-tp4-llama70b-h100"]()
    bundle = render(plan, load_site(_site(tmp, HOSTS["gpu-tp4-llama70b-h100"])), tmp / "out",
                    weights_source=_weights(tmp))
    for rel in ("env/extravars", "env/settings", "env/envvars", "inventory/hosts.yml", "files/weights.sha256",
                "files/docker/compose.yaml", "files/gateway/nginx.conf", "prometheus/scrape.yml",
                "selfhost.lock.yml"):
        assert rel in bundle.files
    assert any(f.startswith("project/") for f in bundle.files) or not any(
        p.is_file() for p in (Path(__file__).parents[2] / "playbooks").rglob("*"))
    v = bundle.vars
    assert v.selfhost_vllm_ipc_host and v.selfhost_vllm_shm_size == "16g" and v.selfhost_vllm_gpus == "4"
    assert v.selfhost_vllm_argv[:2] == ["--model", "/models/llama-3.1-70b"]
    assert v.selfhost_vllm_env["HF_HUB_OFFLINE"] == "1" and v.selfhost_vllm_env["NCCL_P2P_LEVEL"] == "NVL"
    assert v.selfhost_vllm_health_start_period_s == 900
    assert v.selfhost_preflight_min_disk_gib == pytest.approx(131.4 * 2 + 12.5, abs=0.1)
    extravars = yaml.safe_load((bundle.path / "env/extravars").read_text())
    assert extravars == v.model_dump(mode="json")


def test_manifest_lists_every_weight_file_sorted(tmp):
    plan = CASES["cpu-tiny"]()
    bundle = render(plan, load_site(_site(tmp, HOSTS["cpu-tiny"])), tmp / "out", weights_source=_weights(tmp))
    lines = (bundle.path / "files/weights.sha256").read_text().splitlines()
    assert [line.split("  ", 1)[1] for line in lines] == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", line.split("  ")[0]) for line in lines)


def test_weight_hashes_are_cached(tmp):
    plan = CASES["cpu-tiny"]()
    site = load_site(_site(tmp, HOSTS["cpu-tiny"]))
    weights = _weights(tmp)
    render(plan, site, tmp / "out", weights_source=weights)
    cache_file = site.cache_dir / "sha256.json"
    cache = json.loads(cache_file.read_text())
    key = str((weights / "model.safetensors").resolve())
    cache[key]["sha256"] = "c" * 64  # a cache hit must be believed without reading the file
    cache_file.write_text(json.dumps(cache))
    bundle = render(plan, site, tmp / "out", weights_source=weights)
    assert f"{'c' * 64}  model.safetensors" in (bundle.path / "files/weights.sha256").read_text()

    (weights / "model.safetensors").write_bytes(b"changed")  # new size → hashed again
    bundle = render(plan, site, tmp / "out", weights_source=weights)
    assert "c" * 64 not in (bundle.path / "files/weights.sha256").read_text()
