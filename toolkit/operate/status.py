"""`selfhost status`: what each host serves right now, shaped from raw facts into `HostStatus`.

`playbooks/status.yml` reports, per host, the server and gateway containers (docker inspect
fields), two `/metrics` samples taken inside the server container a few seconds apart, and
`nvidia-smi` lines on GPU hosts. Everything here but `gather` is pure: `parse_prometheus` reads the
Prometheus text format, `shape_host` builds the typed model, `shape` reads `readout.gather` answers. Metric names come from
`toolkit.render.monitoring` (the same list the alerts and dashboard use).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from toolkit.deploy import readout
from toolkit.plan.vllm_args import argv_flags
from toolkit.render import monitoring as m
from toolkit.render.multinode import NODE_RANK_LABEL

FACT = readout.Fact(playbook="status.yml", var="_selfhost_status", kind=dict, nothing="status reported nothing")
SAMPLE_S = 3.0

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_prometheus(text: str) -> Samples:
    """Prometheus text exposition → {sample name: [(labels, value), …]}, read by prometheus_client's parser.

    Lines are parsed one at a time so that one malformed line (a proxy's error page spliced into the
    body, a truncated read) costs that sample only, not the whole scrape.
    """
    out: Samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            families = list(text_string_to_metric_families(line + "\n"))
        except (ValueError, IndexError):
            continue
        for family in families:
            for sample in family.samples:
                out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def total(samples: Samples, name: str, **labels: str) -> float | None:
    """Sum of the series of `name` whose labels match; None when the metric is absent."""
    series = samples.get(name)
    if series is None:
        return None
    values = [v for lab, v in series if all(lab.get(k) == want for k, want in labels.items()) and not math.isnan(v)]
    return sum(values) if values else 0.0


@dataclass(frozen=True)
class Metrics:
    requests_running: float | None
    """vllm:num_requests_running."""
    requests_waiting: float | None
    """vllm:num_requests_waiting (queued for a batch slot or KV blocks)."""
    kv_cache_usage_pct: float | None
    """vllm:kv_cache_usage_perc × 100."""
    prompt_tokens_total: float | None
    generation_tokens_total: float | None
    prompt_tokens_per_s: float | None
    """Over the sampling window (second sample minus first)."""
    generation_tokens_per_s: float | None
    requests_finished_total: float | None
    """vllm:request_success_total, every finished_reason."""
    request_errors_total: float | None
    """vllm:request_success_total{finished_reason="error"}."""
    http_5xx_total: float | None
    """http_requests_total{status="5xx"} of the API server."""
    window_s: float | None
    """Seconds between the two samples."""


def shape_metrics(first: Samples, second: Samples, window_s: float | None) -> Metrics:
    """Gauges and totals from the second sample; rates from the difference of the two."""
    def rate(name: str) -> float | None:
        a, b = total(first, name), total(second, name)
        if a is None or b is None or not window_s or window_s <= 0:
            return None
        return round(max(b - a, 0.0) / window_s, 2)

    kv = total(second, m.KV_USAGE.name)
    return Metrics(
        requests_running=total(second, m.RUNNING.name),
        requests_waiting=total(second, m.WAITING.name),
        kv_cache_usage_pct=None if kv is None else round(kv * 100, 1),
        prompt_tokens_total=total(second, m.PROMPT_TOKENS.name),
        generation_tokens_total=total(second, m.GENERATION_TOKENS.name),
        prompt_tokens_per_s=rate(m.PROMPT_TOKENS.name),
        generation_tokens_per_s=rate(m.GENERATION_TOKENS.name),
        requests_finished_total=total(second, m.FINISHED.name),
        request_errors_total=total(second, m.FINISHED.name, finished_reason="error"),
        http_5xx_total=total(second, m.HTTP.name, status="5xx"),
        window_s=None if window_s is None else round(window_s, 2),
    )


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_used_mib: int
    memory_total_mib: int
    utilization_pct: int | None


@dataclass
class HostStatus:
    host: str
    reachable: bool = True
    state: str | None = None
    """Server container state: running, restarting, exited, … or `missing`."""
    health: str | None = None
    """Docker health: healthy, starting, unhealthy (None: no health check)."""
    image: str | None = None
    image_id: str | None = None
    served_model: str | None = None
    """--served-model-name (what clients ask for)."""
    model: str | None = None
    """--model: the weights path inside the container."""
    revision: str | None = None
    """--revision when the plan pins one (weights from a hub revision)."""
    plan_digest: str | None = None
    """org.selfhost.plan-digest label: which plan the container runs."""
    started_at: str | None = None
    uptime_s: float | None = None
    restarts: int | None = None
    gateway_state: str | None = None
    gateway_health: str | None = None
    node_rank: int | None = None
    """Multi-node replicas: the server's node rank (its label); a headless rank (not 0) has no gateway nor HTTP API."""
    gpus: list[Gpu] = field(default_factory=list)
    metrics: Metrics | None = None
    error: str | None = None
    """Why something could not be read (unreachable, no metrics)."""

    @property
    def headless(self) -> bool:
        return self.node_rank not in (None, 0)

    @property
    def ok(self) -> bool:
        """Serving: server running and healthy, gateway running and healthy (a headless rank has no gateway)."""
        return (self.reachable and self.state == "running" and self.health == "healthy"
                and (self.headless or (self.gateway_state == "running" and self.gateway_health in ("healthy", None))))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def parse_docker_time(value: str | None) -> float | None:
    """Docker's RFC 3339 time with nanoseconds (2025-01-02T03:04:05.123456789Z) → Unix seconds."""
    if not value or value.startswith("0001-"):
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value.strip())
    if not match:
        return None
    base, frac, tz = match.groups()
    stamp = datetime.fromisoformat(base + ("+00:00" if tz == "Z" else tz)).timestamp()
    return stamp + (float(frac) if frac else 0.0)


def _gpus(lines: list[str]) -> list[Gpu]:
    gpus = []
    for line in lines:
        parts = [p.strip() for p in str(line).split(",")]
        if len(parts) < 4:
            continue
        try:
            util = int(parts[4]) if len(parts) > 4 and parts[4].isdigit() else None
            gpus.append(Gpu(int(parts[0]), parts[1], int(float(parts[2])), int(float(parts[3])), util))
        except ValueError:
            continue
    return gpus


def shape_host(host: str, raw: dict[str, Any], *, now: float | None = None) -> HostStatus:
    """One host's raw facts (as status.yml reports them) → HostStatus."""
    st = HostStatus(host=host)
    vllm = raw.get("vllm")
    if not vllm:
        st.state = "missing"
        st.error = raw.get("vllm_error") or "no inference server container"
    else:
        state = vllm.get("State") or {}
        args = [str(a) for a in vllm.get("Args") or []]
        labels = vllm.get("Labels") or {}
        st.state, st.health = state.get("Status"), (state.get("Health") or {}).get("Status")
        st.image, st.image_id, st.restarts = vllm.get("Image"), vllm.get("ImageId"), vllm.get("RestartCount")
        flags = argv_flags(args)
        st.served_model = flags.get("--served-model-name")
        st.model = flags.get("--model") or flags.get("(arg0)")
        st.revision = flags.get("--revision")
        st.plan_digest = labels.get("org.selfhost.plan-digest")
        rank = str(labels.get(NODE_RANK_LABEL, ""))
        st.node_rank = int(rank) if rank.isdigit() else None
        st.started_at = state.get("StartedAt")
    gateway = raw.get("gateway") or {}
    gstate = gateway.get("State") or {}
    st.gateway_state = gstate.get("Status") if gateway else (None if st.headless else "missing")
    st.gateway_health = (gstate.get("Health") or {}).get("Status")
    st.gpus = _gpus(raw.get("gpus") or [])
    sample_t = None
    text = raw.get("metrics") or ""
    if text:
        try:
            samples = json.loads(text)
            first, second = samples[0], samples[-1]
            sample_t = float(second["t"])
            window = sample_t - float(first["t"]) if len(samples) > 1 else None
            st.metrics = shape_metrics(parse_prometheus(first["text"]), parse_prometheus(second["text"]), window)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            st.error = f"could not read /metrics: {exc}"
    elif st.state == "running" and not st.headless:  # a headless rank serves no /metrics
        st.error = "could not read /metrics: " + (" ".join(str(raw.get("metrics_error") or "no output").split()) or "no output")
    started = parse_docker_time(st.started_at)
    if started is not None and st.state == "running":
        st.uptime_s = round(max((sample_t or now or time.time()) - started, 0.0), 1)
    return st


def unreachable_host(host: str, why: str) -> HostStatus:
    return HostStatus(host=host, reachable=False, error=why)


def shape(answers: dict[str, Any]) -> list[HostStatus]:
    """`readout.gather` answers → one HostStatus per host (not reachable, or nothing reported: `reachable` False)."""
    return [unreachable_host(h, raw.why) if isinstance(raw, (readout.Unreachable, readout.NoReport))
            else shape_host(h, raw) for h, raw in answers.items()]


@dataclass(frozen=True)
class FleetView:
    """A fleet deployment seen whole: how many replicas serve, and where the traffic went."""
    healthy: int
    """Replicas serving now (every host of it: server running and healthy; the serving host's gateway up)."""
    total: int
    """Replicas of the deployment that were asked (a multi-node group is one replica)."""
    served: dict[str, float | None]
    """Serving host (rank 0 of a group) → requests its server finished (vllm:request_success_total);
    None: not read."""
    share_pct: dict[str, float | None]
    """Serving host → its replica's part of all finished requests, in percent."""
    replicas: dict[str, list[str]] = field(default_factory=dict)
    """Serving host → every host of its replica in rank order (itself alone for a one-host replica)."""

    def to_dict(self) -> dict:
        return asdict(self)


def fleet_view(statuses: list[HostStatus], replicas: list[list[str]] | None = None) -> FleetView:
    """Replicas healthy / total, and each replica's finished requests (every gateway of a fleet balances over
    all of them, so this is where the fleet's traffic went).

    replicas: the hosts of each multi-node group, rank 0 first (`replica_groups`); None: each host is one. A
    group counts once: healthy when each of its hosts is, its traffic is its rank 0's (the only API server)."""
    by_host = {s.host: s for s in statuses}
    groups = [g for g in (replicas or [[s.host] for s in statuses]) if any(h in by_host for h in g)]
    served = {g[0]: (by_host[g[0]].metrics.requests_finished_total
                     if g[0] in by_host and by_host[g[0]].metrics else None) for g in groups}
    known = sum(v for v in served.values() if v)
    share = {h: (round(100 * v / known, 1) if v is not None and known else None) for h, v in served.items()}
    healthy = sum(1 for g in groups if all(h in by_host and by_host[h].ok for h in g))
    return FleetView(healthy=healthy, total=len(groups), served=served, share_pct=share,
                     replicas={g[0]: list(g) for g in groups})


def is_fleet(bundle: Path) -> bool:
    """True when the bundle was rendered with `selfhost_fleet: true` (its extravars carry the fleet)."""
    try:
        text = (Path(bundle) / "env" / "extravars").read_text()
    except OSError:
        return False
    return re.search(r"^selfhost_fleet:", text, re.M) is not None


def replica_groups(bundle: Path) -> list[list[str]] | None:
    """The hosts of each multi-node replica (rank order) from the bundle's extravars; None for one-host replicas."""
    from toolkit.render.bundle import load_vars

    try:
        extravars = load_vars((Path(bundle) / "env" / "extravars").read_text()) or {}
    except OSError:
        return None
    mn = extravars.get("selfhost_multinode")
    return [[mb["name"] for mb in g["members"]] for g in mn["groups"]] if mn else None


def gather(bundle: Path, hosts: list[str], *, limit: str | None = None, sample_s: float = SAMPLE_S) -> list[HostStatus]:
    """Run playbooks/status.yml (check mode, read-only) and shape each host's facts."""
    return shape(readout.gather(bundle, FACT, hosts, limit=limit, extravars={"selfhost_status_sample_s": sample_s}))
