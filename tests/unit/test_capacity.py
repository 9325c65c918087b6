"""Capacity from the workload: Little's law on a speed curve, the batch within the service level and
the KV cache, replicas, and GPUs in units that can be bought."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from toolkit import catalog
from toolkit.plan import capacity, planner
from toolkit.plan.capacity import Workload, gpus_to_buy, size


@dataclass
class Pt:
    per_user_tokens_per_s: float
    tokens_per_s: float
    ttft_s: float = 0.0


def linear_speed(batch: int) -> Pt:
    """A replica whose per-user speed falls 0.2 tok/s per extra sequence from 50 tok/s; TTFT 0.5 s."""
    per_user = 50 - 0.2 * batch
    return Pt(per_user, batch * per_user, 0.5)


# 10 requests/s at peak: 12,960,000 requests in a 30-day month with a 2× peak.
TEN_PER_S = dict(requests_per_month=12_960_000, peak_factor=2.0, input_tokens=400, output_tokens=600)


def test_littles_law_worked_example():
    # Service level 20 tok/s: 50 - 0.2 b >= 20  =>  b <= 150 (KV holds 200 sequences of 1,000 tokens).
    # Latency = 0.5 s + 600 tokens / 20 tok/s = 30.5 s; in flight = 10/s × 30.5 s = 305; 305 / 150 -> 3 replicas.
    w = Workload(**TEN_PER_S, tokens_per_second=20)
    s = size(w, linear_speed, kv_capacity_tokens=200 * 1000, max_num_seqs=256)
    assert s.rate_per_s == pytest.approx(10.0)
    assert s.batch_per_replica == 150 and s.limited_by == "service level"
    assert s.in_flight == pytest.approx(305.0)
    assert s.replicas == 3
    assert not s.problems
    text = "\n".join(s.how)
    assert "Little" in text and "305" in text and "= 3" in text


def test_kv_cache_bounds_the_batch():
    # KV holds 100 sequences of 1,000 tokens: batch 100 at 30 tok/s -> latency 0.5 + 600/30 = 20.5 s,
    # in flight 205 -> 3 replicas.
    w = Workload(**TEN_PER_S, tokens_per_second=20)
    s = size(w, linear_speed, kv_capacity_tokens=100 * 1000 + 999, max_num_seqs=1024)
    assert s.batch_per_replica == 100 and s.limited_by == "KV cache"
    assert s.in_flight == pytest.approx(205.0)
    assert s.replicas == 3


def test_rate_given_per_second_is_the_peak():
    w = Workload(requests_per_second=10, input_tokens=400, output_tokens=600, tokens_per_second=20)
    s = size(w, linear_speed, kv_capacity_tokens=200 * 1000, max_num_seqs=256)
    assert s.rate_per_s == 10 and s.replicas == 3
    # Default peak factor 3: 10/s at peak is 3.33/s on average × 2,592,000 s in 30 days = 8,640,000 a month.
    assert w.monthly_requests == pytest.approx(8_640_000)


def test_tighter_ttft_means_smaller_batches_and_more_replicas():
    def slow_first_token(b: int) -> Pt:
        return Pt(50 - 0.2 * b, b * (50 - 0.2 * b), 0.01 * b)

    loose = size(Workload(**TEN_PER_S, tokens_per_second=20, ttft_p95_s=100), slow_first_token,
                 kv_capacity_tokens=1e6, max_num_seqs=256)
    tight = size(Workload(**TEN_PER_S, tokens_per_second=20, ttft_p95_s=0.5), slow_first_token,
                 kv_capacity_tokens=1e6, max_num_seqs=256)
    assert tight.batch_per_replica < loose.batch_per_replica
    assert tight.replicas > loose.replicas


def test_unreachable_service_level_is_a_problem():
    s = size(Workload(**TEN_PER_S, tokens_per_second=60), linear_speed, kv_capacity_tokens=1e6, max_num_seqs=256)
    assert s.problems and "60" in s.problems[0]


def test_without_volume_it_sizes_for_the_concurrency():
    s = size(Workload(concurrency=8, input_tokens=400, output_tokens=600), linear_speed,
             kv_capacity_tokens=1e6, max_num_seqs=256)
    assert s.replicas == 1 and s.batch_per_replica == 8 and s.rate_per_s is None


def test_concurrency_overrides_the_batch_with_a_volume():
    s = size(Workload(**TEN_PER_S, tokens_per_second=20, concurrency=50), linear_speed,
             kv_capacity_tokens=1e6, max_num_seqs=256)
    # 50 sequences at 40 tok/s: latency 0.5 + 15 = 15.5 s, in flight 155 -> 4 replicas.
    assert s.batch_per_replica == 50 and s.replicas == 4


# HGX baseboards carry 4 or 8 SXM GPUs (B200 and AMD's OAM platforms: 8 only); PCIe cards are sold singly.
@pytest.mark.parametrize("gpu,needed,bought", [
    ("H100-SXM", 1, 4), ("H100-SXM", 4, 4), ("H100-SXM", 6, 8), ("H100-SXM", 9, 16),
    ("B200", 1, 8), ("MI300X", 3, 8), ("MI355X", 8, 8),
    ("L40S", 3, 3), ("H100-PCIe", 5, 5), ("H200-NVL", 6, 6),
])
def test_baseboard_parts_are_bought_in_whole_baseboards(gpu, needed, bought):
    got, note = gpus_to_buy(catalog.gpu(gpu), needed)
    assert got == bought
    assert (note is None) == (got == needed)


@pytest.mark.parametrize("gpu,warned", [("RTX-4090", True), ("RTX-3090", True), ("RTX-5090", True),
                                        ("RTX-6000-Ada", False), ("RTX-PRO-6000", False), ("L40S", False)])
def test_geforce_cards_carry_the_driver_licence_warning(gpu, warned):
    w = capacity.consumer_card_warning(catalog.gpu(gpu))
    assert bool(w) is warned
    if w:
        assert "datacenter" in w


def test_case_a_needs_a_few_gpus_not_hundreds():
    """Seed case A: 10 M requests/month, 500 in / 1,000 out on Llama 3 70B, no --concurrency."""
    req = planner.PlanRequest(model="meta-llama/Meta-Llama-3-70B-Instruct", requests_per_month=10_000_000,
                              input_tokens=500, output_tokens=1000)
    best = planner.plan(req).options[0]
    # 11,574 output tokens/s at a 3x peak: more than one replica, a few GPU servers at most.
    assert best.replicas > 1
    assert 2 <= best.cost.gpus_bought <= 48
    assert best.sizing.in_flight > best.sizing.batch_per_replica
    assert best.cost.gpus_bought >= best.count * best.replicas


def test_plan_prints_how_it_got_its_numbers():
    req = planner.PlanRequest(model="meta-llama/Llama-3.1-8B-Instruct", gpus=["L40S"], requests_per_second=5,
                              input_tokens=500, output_tokens=200, tokens_per_second=30)
    best = planner.plan(req).options[0]
    assert best.sizing.rate_per_s == 5
    assert best.sizing.per_user_tokens_per_s >= 30
    assert math.ceil(best.sizing.in_flight / best.sizing.batch_per_replica) <= best.replicas
