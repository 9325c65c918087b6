"""Layouts that span hosts: tensor parallel inside a host, pipeline stages across hosts."""

from __future__ import annotations

import pytest

from toolkit import catalog
from toolkit.errors import ConfigError
from toolkit.plan import planner
from toolkit.plan.model import Plan


def _plan(**kw):
    return planner.plan(planner.PlanRequest(**kw)).plan


def test_deepseek_r1_on_h100_is_a_two_host_group():
    # 671B at FP8 is ~640 GiB of weights: more than one 8×80 GB HGX board holds with room for a KV cache.
    p = _plan(model="deepseek-ai/DeepSeek-R1", gpus=["H100-SXM"])
    hw = p.hardware
    assert (hw.tensor_parallel_size, hw.pipeline_parallel_size) == (8, 2)
    assert hw.hosts_per_replica == 2 and hw.gpus_per_replica == 16


def test_single_host_layouts_stay_on_one_host():
    p = _plan(model="llama-3.1-8b", gpus=["H100-SXM"])
    assert p.hardware.hosts_per_replica == 1


def test_tensor_parallel_across_hosts_is_refused():
    r = planner.plan(planner.PlanRequest(model="llama-3.1-70b", gpus=["L40S"], tp=16, pp=1))
    assert not r.options
    assert any("spans hosts" in p for p in r.rejected[0].problems)


def test_hand_edited_hosts_per_replica_must_match_the_gpus(tmp_path):
    p = _plan(model="deepseek-ai/DeepSeek-R1", gpus=["H100-SXM"])
    data = p.model_dump(mode="json")
    data["hardware"]["hosts_per_replica"] = 1
    with pytest.raises(ConfigError, match="hosts_per_replica"):
        Plan.from_dict(data)


@pytest.mark.parametrize("gpu,tp,pp,hosts", [("H100-SXM", 8, 2, 2), ("H100-SXM", 4, 2, 1), ("L40S", 8, 4, 4),
                                             ("H100-SXM", 8, 1, 1)])
def test_hosts_per_replica(gpu, tp, pp, hosts):
    assert planner.hosts_per_replica(catalog.gpu(gpu), tp, pp) == hosts


def test_cpu_pipeline_stages_are_hosts():
    assert planner.hosts_per_replica(None, 1, 2) == 2
