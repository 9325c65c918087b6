"""Capacity from the workload: requests in flight at peak (Little's law), the batch one replica runs
within the service level and its KV cache, replicas, and GPUs in units you can buy.

Pure. The speed model enters through one seam, `SpeedAt`: a callable `(batch) -> object` with
`per_user_tokens_per_s`, `tokens_per_s` and optionally `ttft_s` (mean seconds to first token); the
planner passes `throughput.serving_speed` for the layout being evaluated.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, Protocol

SECONDS_PER_MONTH = 30 * 86400
DEFAULT_PER_USER_TOKENS_PER_S = 20.0
"""Service level assumed when a volume is given without one: streaming a little faster than people read."""
TTFT_P95_OVER_MEAN = 2.0
"""The speed model gives a mean TTFT; p95 under peak load is taken as this multiple of it."""


class SpeedLike(Protocol):
    per_user_tokens_per_s: float
    tokens_per_s: float


SpeedAt = Callable[[int], Any]


@dataclass(frozen=True)
class Workload:
    """What the users ask of the service."""

    requests_per_month: float | None = None
    requests_per_second: float | None = None  # at peak
    peak_factor: float = 3.0  # peak rate / monthly-average rate
    input_tokens: int = 1000
    output_tokens: int = 300
    tokens_per_second: float | None = None  # per-user streaming floor
    ttft_p95_s: float | None = None
    concurrency: int | None = None  # override: sequences one replica runs (without a volume: users at once)

    @property
    def has_volume(self) -> bool:
        return bool(self.requests_per_month) or bool(self.requests_per_second)

    @property
    def peak_rate(self) -> float | None:
        """Requests per second at peak."""
        if self.requests_per_second:
            return float(self.requests_per_second)
        if self.requests_per_month:
            return self.requests_per_month / SECONDS_PER_MONTH * self.peak_factor
        return None

    @property
    def monthly_requests(self) -> float | None:
        """Requests per month (derived from the peak rate when only that was given)."""
        if self.requests_per_month:
            return float(self.requests_per_month)
        if self.requests_per_second:
            return self.requests_per_second / self.peak_factor * SECONDS_PER_MONTH
        return None


@dataclass(frozen=True)
class ReplicaSizing:
    """How many replicas the workload needs, and the arithmetic that says so."""

    rate_per_s: float | None
    """Peak requests/s (None: sized for a concurrency, no volume)."""
    in_flight: float
    """Requests being served at once at peak."""
    batch_per_replica: int
    """Sequences one replica runs at once within the service level and its KV cache."""
    replicas: int
    """Copies of the server needed."""
    per_user_tokens_per_s: float
    """Streaming speed each user sees at that batch."""
    replica_tokens_per_s: float
    """Output tokens/s one replica delivers at that batch."""
    ttft_s: float
    """Mean time to first token at that batch (0 when the speed model does not give it)."""
    replica_requests_per_s: float
    """Requests/s one replica completes at that batch."""
    limited_by: str
    """What bounds the batch: service level, KV cache, max_num_seqs or --concurrency."""
    how: list[str] = field(default_factory=list)
    """Human lines showing the arithmetic."""
    problems: list[str] = field(default_factory=list)
    """Why this layout cannot meet the service level (empty when it can)."""
    speed: Any = None
    """The speed object at `batch_per_replica`."""


def kv_batch_limit(kv_capacity_tokens: float | None, input_tokens: int, output_tokens: int) -> int | None:
    """Sequences of (input + output) tokens the KV cache holds at once."""
    if kv_capacity_tokens is None:
        return None
    return int(kv_capacity_tokens // max(1, input_tokens + output_tokens))


def _ttft(s) -> float:
    return float(getattr(s, "ttft_s", 0.0) or 0.0)


def _meets(s, w: Workload, per_user_floor: float | None) -> list[str]:
    why = []
    if per_user_floor and s.per_user_tokens_per_s < per_user_floor:
        why.append(f"{s.per_user_tokens_per_s:.0f} tokens/s per user < {per_user_floor:g} asked")
    if w.ttft_p95_s and _ttft(s) * TTFT_P95_OVER_MEAN > w.ttft_p95_s:
        why.append(f"TTFT p95 ≈ {_ttft(s) * TTFT_P95_OVER_MEAN:.2f} s > {w.ttft_p95_s:g} s asked")
    return why


def size(w: Workload, speed_at: SpeedAt, *, kv_capacity_tokens: float | None, max_num_seqs: int | None) -> ReplicaSizing:
    """Replicas for workload `w` on one layout whose speed at a batch is `speed_at(batch)`."""
    kv_cap = kv_batch_limit(kv_capacity_tokens, w.input_tokens, w.output_tokens)
    seq_tokens = w.input_tokens + w.output_tokens
    bounds = [(b, why) for b, why in ((kv_cap, "KV cache"), (max_num_seqs, "max_num_seqs")) if b is not None]
    cap, cap_why = min(bounds, key=lambda t: t[0]) if bounds else (1_000_000, "none")
    cap = max(1, cap)
    how: list[str] = []
    if kv_cap is not None:
        how.append(f"KV cache: {kv_capacity_tokens:,.0f} tokens ÷ ({w.input_tokens} in + {w.output_tokens} out = "
                   f"{seq_tokens}) per sequence = {kv_cap} sequences" + (f", max_num_seqs {max_num_seqs}" if max_num_seqs else ""))

    if not w.has_volume:
        users = w.concurrency or 1
        batch = max(1, min(users, cap))
        s = speed_at(batch)
        how.append(f"no volume given: sized for {users} concurrent request{'s' if users > 1 else ''} (--concurrency)")
        latency = _ttft(s) + w.output_tokens / max(s.per_user_tokens_per_s, 1e-9)
        return ReplicaSizing(None, float(users), batch, 1, s.per_user_tokens_per_s, s.tokens_per_s, _ttft(s),
                             batch / latency, "--concurrency", how, _meets(s, w, w.tokens_per_second), s)

    floor = w.tokens_per_second
    if floor is None and not w.ttft_p95_s:
        floor = DEFAULT_PER_USER_TOKENS_PER_S
        how.append(f"service level: {floor:g} tokens/s per user (assumed; set --tokens-per-second / --ttft-p95)")
    else:
        parts = [f"{floor:g} tokens/s per user" if floor else None, f"TTFT p95 ≤ {w.ttft_p95_s:g} s" if w.ttft_p95_s else None]
        how.append("service level: " + ", ".join(p for p in parts if p) + " (given)")

    problems: list[str] = []
    if w.concurrency:
        batch, limited = max(1, min(w.concurrency, cap)), "--concurrency"
        if w.concurrency > cap:
            limited = cap_why
        s = speed_at(batch)
        problems = _meets(s, w, floor)
    else:
        s1 = speed_at(1)
        problems = _meets(s1, w, floor)
        if problems:
            batch, s, limited = 1, s1, "service level"
        else:
            lo, hi = 1, cap
            while lo < hi:  # per-user speed falls and TTFT grows with the batch
                mid = (lo + hi + 1) // 2
                if _meets(speed_at(mid), w, floor):
                    hi = mid - 1
                else:
                    lo = mid
            batch = lo
            s = speed_at(batch)
            limited = cap_why if batch == cap else "service level"

    rate = w.peak_rate
    ttft = _ttft(s)
    tpot = 1.0 / max(s.per_user_tokens_per_s, 1e-9)
    latency = ttft + w.output_tokens * tpot
    in_flight = rate * latency
    by_batch = math.ceil(in_flight / batch - 1e-9)
    peak_out = rate * w.output_tokens
    by_tokens = math.ceil(peak_out / max(s.tokens_per_s, 1e-9) - 1e-9)
    replicas = max(1, by_batch, by_tokens)
    if w.requests_per_second:
        how.append(f"peak rate {rate:,.2f} requests/s (given)")
    else:
        how.append(f"peak rate = {w.requests_per_month:,.0f} requests/month ÷ {SECONDS_PER_MONTH:,} s × peak factor "
                   f"{w.peak_factor:g} = {rate:,.2f} requests/s")
    how.append(f"batch per replica {batch} (limited by {limited}): {s.per_user_tokens_per_s:.1f} tokens/s per user, "
               f"TTFT {ttft:.2f} s, {s.tokens_per_s:,.0f} output tokens/s per replica")
    how.append(f"in flight (Little's law) = {rate:,.2f}/s × ({ttft:.2f} s + {w.output_tokens} × {tpot * 1000:.1f} ms) "
               f"= {in_flight:,.1f} requests")
    how.append(f"replicas = max(ceil({in_flight:,.1f} ÷ {batch}) = {by_batch}, ceil({peak_out:,.0f} tok/s ÷ "
               f"{s.tokens_per_s:,.0f} tok/s) = {by_tokens}) = {replicas}")
    return ReplicaSizing(rate, in_flight, batch, replicas, s.per_user_tokens_per_s, s.tokens_per_s, ttft,
                         batch / latency, limited, how, problems, s)


# ---------------------------------------------------------------- the speed seam


@dataclass(frozen=True)
class ServingPoint:
    """A replica's speed at one batch, prefill included."""

    batch: int
    per_user_tokens_per_s: float
    tokens_per_s: float
    ttft_s: float


# ---------------------------------------------------------------- purchasable units

_BASEBOARD_ONLY = re.compile(r"sxm|oam|mi300x|mi325x|mi355x|\bb200\b|\bb300\b|gb200", re.IGNORECASE)
_GEFORCE = re.compile(r"^(rtx-?\d{4}|geforce.*)$", re.IGNORECASE)


def baseboard_size(gpu) -> int | None:
    """GPUs per baseboard for parts sold only on HGX/OAM baseboards (None: sold one by one)."""
    names = " ".join([gpu.name, *gpu.aliases])
    if not _BASEBOARD_ONLY.search(names):
        return None
    return 8 if gpu.vendor == "amd" or re.search(r"b200|b300", names, re.IGNORECASE) else 4


def gpus_to_buy(gpu, needed: int) -> tuple[int, str | None]:
    """GPUs bought for `needed` GPUs: SXM/OAM parts round up to whole 4- or 8-GPU baseboards."""
    board = baseboard_size(gpu)
    if not board or needed <= 0:
        return needed, None
    if board == 4 and needed <= 4:
        bought = 4
    else:
        bought = 8 * math.ceil(needed / 8)
    if bought == needed:
        return bought, None
    return bought, (f"{gpu.name} is sold on {board if needed <= 4 else 8}-GPU baseboards: {needed} GPUs needed, "
                    f"{bought} bought")


def consumer_card_warning(gpu) -> str | None:
    if gpu is None or not _GEFORCE.search(gpu.name):
        return None
    return (f"{gpu.name} is a GeForce card: NVIDIA's GeForce driver licence forbids datacenter deployment "
            "(workstations and desks only)")
