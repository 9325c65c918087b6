"""Alert rules and the Grafana dashboard, from ONE list of metric names (the pinned vLLM's).

The renderer serializes three files from here (Prometheus and Grafana read them, so no Jinja):

    BUNDLE/prometheus/alerts.yml     Prometheus rule file (`rule_files:` in prometheus.yml)
    BUNDLE/prometheus/blackbox.yml   blackbox_exporter modules for the TLS-expiry and host probes
    BUNDLE/grafana/dashboard.json    Grafana dashboard model (Dashboards → Import)

`tests/integration/test_metrics_contract.py` starts the pinned vLLM, scrapes `/metrics` and fails
when any `vllm` metric used below is missing: a vLLM upgrade that renames a metric fails in CI,
not as an empty Grafana panel. Metric names were checked against vLLM 0.32.0 (V1 engine).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from toolkit.plan.model import Plan

Source = Literal["vllm", "prometheus", "blackbox"]

BLACKBOX_ADDRESS = "127.0.0.1:9115"  # where Prometheus reaches the blackbox exporter (edit in scrape.yml)
CERT_WARN_DAYS = 21  # internal-CA renders re-issue at 30 days; warn a week before that would be too late
KV_USAGE_WARN = 0.9
TTFT_P95_TARGET_S = {"gpu": 2.0, "cpu": 10.0}  # assumed service-level targets; the plan has no prefill model


@dataclass(frozen=True)
class Metric:
    name: str
    """Sample name exactly as PromQL uses it (histograms: the `_bucket` series)."""
    source: Source
    """Who exports it: the vLLM server (checked by the contract test), Prometheus itself, or blackbox_exporter."""
    help: str
    """What it measures."""


# ---------------------------------------------------------------- the metrics (one list)

RUNNING = Metric("vllm:num_requests_running", "vllm", "Requests in the running batch")
WAITING = Metric("vllm:num_requests_waiting", "vllm", "Requests queued, waiting for a batch slot / KV blocks")
KV_USAGE = Metric("vllm:kv_cache_usage_perc", "vllm", "Fraction (0–1) of KV-cache blocks in use")
PROMPT_TOKENS = Metric("vllm:prompt_tokens_total", "vllm", "Prompt (prefill) tokens processed")
GENERATION_TOKENS = Metric("vllm:generation_tokens_total", "vllm", "Tokens generated")
PREEMPTIONS = Metric("vllm:num_preemptions_total", "vllm", "Requests preempted because the KV cache ran out")
TTFT = Metric("vllm:time_to_first_token_seconds_bucket", "vllm", "Time to first token (histogram)")
ITL = Metric("vllm:inter_token_latency_seconds_bucket", "vllm", "Time between output tokens (histogram)")
E2E = Metric("vllm:e2e_request_latency_seconds_bucket", "vllm", "Whole-request latency (histogram)")
FINISHED = Metric("vllm:request_success_total", "vllm", "Finished requests by finished_reason (stop/length/abort/error)")
HTTP = Metric("http_requests_total", "vllm", "HTTP requests by handler and status class (2xx, 4xx, 5xx)")
START_TIME = Metric("process_start_time_seconds", "vllm", "Start time of the API server process (changes = restart)")
UP = Metric("up", "prometheus", "1 when Prometheus could scrape the target")
CERT_EXPIRY = Metric("probe_ssl_earliest_cert_expiry", "blackbox", "Unix time the served certificate expires")
PROBE_OK = Metric("probe_success", "blackbox", "1 when the blackbox probe succeeded")

METRICS = (RUNNING, WAITING, KV_USAGE, PROMPT_TOKENS, GENERATION_TOKENS, PREEMPTIONS, TTFT, ITL, E2E, FINISHED,
           HTTP, START_TIME, UP, CERT_EXPIRY, PROBE_OK)


@dataclass(frozen=True)
class Thresholds:
    kv_usage: float
    """KV-cache use that warns (fraction)."""
    waiting: int
    """Queued requests that warn: one full batch (`--max-num-seqs`) waiting."""
    ttft_p95_s: float
    """Time-to-first-token p95 target, seconds."""
    itl_p95_s: float
    """Inter-token latency p95 target: twice the planned per-user token interval, seconds."""
    cert_days: int
    """Days before certificate expiry that warn."""


@dataclass(frozen=True)
class AlertRule:
    name: str
    expr: str
    for_: str
    severity: Literal["warning", "critical"]
    summary: str
    description: str
    runbook: str
    """Runbook topic (`selfhost runbook TOPIC`, files/runbooks/TOPIC.md in the bundle)."""


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    """Grafana unit id (short, percentunit, s, reqps)."""
    targets: tuple[tuple[str, str], ...]
    """(PromQL, legend) pairs."""
    description: str = ""


def thresholds(plan: Plan) -> Thresholds:
    per_user = plan.performance.per_user_tokens_per_s or plan.performance.decode_tokens_per_s
    return Thresholds(
        kv_usage=KV_USAGE_WARN,
        waiting=plan.vllm.max_num_seqs,
        ttft_p95_s=TTFT_P95_TARGET_S[plan.hardware.device],
        itl_p95_s=round(2.0 / per_user, 3) if per_user > 0 else 1.0,
        cert_days=CERT_WARN_DAYS,
    )


def jobs(plan: Plan) -> dict[str, str]:
    """Prometheus job names for this deployment (scrape.yml defines them)."""
    return {"server": f"selfhost-{plan.name}", "tls": f"selfhost-{plan.name}-tls", "host": f"selfhost-{plan.name}-host"}


def _sel(plan: Plan, extra: str = "") -> str:
    return "{" + f'job="{jobs(plan)["server"]}"' + (f",{extra}" if extra else "") + "}"


def _quantile(q: float, metric: Metric, sel: str, by: str = "instance") -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric.name}{sel}[5m])))"


ERR_5XX = 'status="5xx"'
ERR_REASONS = 'finished_reason=~"abort|error"'


def alert_rules(plan: Plan) -> list[AlertRule]:
    t, s, j = thresholds(plan), _sel(plan), jobs(plan)
    s5xx = _sel(plan, ERR_5XX)
    name = plan.name
    return [
        AlertRule("SelfhostServerDown", f'{UP.name}{s} == 0', "2m", "critical",
                  f"{name}: {{{{ $labels.instance }}}} does not answer /metrics",
                  "Prometheus cannot scrape the server through the gateway: the host, the gateway or vLLM is down.",
                  "host-lost"),
        AlertRule("SelfhostHostDown", f'{PROBE_OK.name}{{job="{j["host"]}"}} == 0', "3m", "critical",
                  f"{name}: host {{{{ $labels.instance }}}} is unreachable",
                  "The blackbox ICMP probe gets no answer (needs blackbox_exporter, see prometheus/blackbox.yml).",
                  "host-lost"),
        AlertRule("SelfhostEngineRestarted", f"changes({START_TIME.name}{s}[15m]) > 0", "0m", "warning",
                  f"{name}: the vLLM server on {{{{ $labels.instance }}}} restarted",
                  "The API server process started again in the last 15 minutes (crash loop, OOM kill, or a deploy).",
                  "oom-kv-cache"),
        AlertRule("SelfhostKVCacheSaturated", f"max by (instance) ({KV_USAGE.name}{s}) > {t.kv_usage}", "10m", "warning",
                  f"{name}: KV cache over {t.kv_usage:.0%} on {{{{ $labels.instance }}}}",
                  f"The KV cache holds {plan.capacity.kv_cache_tokens} tokens; near full, requests queue or are preempted.",
                  "oom-kv-cache"),
        AlertRule("SelfhostQueueBacklog", f"max by (instance) ({WAITING.name}{s}) > {t.waiting}", "5m", "warning",
                  f"{name}: more than {t.waiting} requests waiting on {{{{ $labels.instance }}}}",
                  f"A whole batch (--max-num-seqs {plan.vllm.max_num_seqs}) is queued: demand exceeds capacity.",
                  "slow-tokens"),
        AlertRule("SelfhostTimeToFirstTokenHigh", f"{_quantile(0.95, TTFT, s)} > {t.ttft_p95_s}", "10m", "warning",
                  f"{name}: time to first token p95 above {t.ttft_p95_s} s on {{{{ $labels.instance }}}}",
                  "Prompts wait in the queue or prefill is slow.", "slow-tokens"),
        AlertRule("SelfhostInterTokenLatencyHigh", f"{_quantile(0.95, ITL, s)} > {t.itl_p95_s}", "10m", "warning",
                  f"{name}: inter-token latency p95 above {t.itl_p95_s} s on {{{{ $labels.instance }}}}",
                  f"The plan expects {plan.performance.per_user_tokens_per_s:g} tokens/s per user at "
                  f"{plan.performance.at_concurrency} concurrent requests; this is under half of that.",
                  "slow-tokens"),
        AlertRule("SelfhostServerErrors",
                  f"sum by (instance) (rate({HTTP.name}{s5xx}[5m])) "
                  f"/ sum by (instance) (rate({HTTP.name}{s}[5m])) > 0.05", "5m", "warning",
                  f"{name}: over 5% of requests fail with 5xx on {{{{ $labels.instance }}}}",
                  "vLLM answers with server errors; read its log.", "overview"),
        AlertRule("SelfhostCertificateExpiresSoon",
                  f'({CERT_EXPIRY.name}{{job="{j["tls"]}"}} - time()) / 86400 < {t.cert_days}', "1h", "warning",
                  f"{name}: the gateway certificate of {{{{ $labels.instance }}}} expires in under {t.cert_days} days",
                  "Measured by the blackbox exporter's TLS probe (see prometheus/blackbox.yml).",
                  "certificate-expiry"),
    ]


def panels(plan: Plan) -> list[Panel]:
    s, s5xx, sreason = _sel(plan), _sel(plan, ERR_5XX), _sel(plan, ERR_REASONS)
    return [
        Panel("Requests running / waiting", "short",
              ((f"sum by (instance) ({RUNNING.name}{s})", "running {{instance}}"),
               (f"sum by (instance) ({WAITING.name}{s})", "waiting {{instance}}"))),
        Panel("KV cache usage", "percentunit",
              ((f"max by (instance) ({KV_USAGE.name}{s})", "{{instance}}"),),
              f"Of {plan.capacity.kv_cache_tokens} tokens; sustained > {KV_USAGE_WARN:.0%} means queueing."),
        Panel("Tokens per second", "short",
              ((f"sum by (instance) (rate({PROMPT_TOKENS.name}{s}[1m]))", "prompt {{instance}}"),
               (f"sum by (instance) (rate({GENERATION_TOKENS.name}{s}[1m]))", "generation {{instance}}")),
              f"Planned decode: {plan.performance.aggregate_tokens_per_s:g} tokens/s at "
              f"{plan.performance.at_concurrency} concurrent requests."),
        Panel("Time to first token", "s",
              ((_quantile(0.5, TTFT, s), "p50 {{instance}}"), (_quantile(0.95, TTFT, s), "p95 {{instance}}"))),
        Panel("Inter-token latency", "s",
              ((_quantile(0.5, ITL, s), "p50 {{instance}}"), (_quantile(0.95, ITL, s), "p95 {{instance}}"))),
        Panel("Request latency (end to end)", "s",
              ((_quantile(0.5, E2E, s), "p50 {{instance}}"), (_quantile(0.95, E2E, s), "p95 {{instance}}"))),
        Panel("Errors", "reqps",
              ((f"sum by (instance) (rate({HTTP.name}{s5xx}[5m]))", "HTTP 5xx {{instance}}"),
               (f"sum by (instance, finished_reason) (rate({FINISHED.name}{sreason}[5m]))",
                "{{finished_reason}} {{instance}}"),
               (f"sum by (instance) (rate({PREEMPTIONS.name}{s}[5m]))", "preempted {{instance}}"))),
        Panel("Up", "short", ((f"{UP.name}{s}", "{{instance}}"),)),
    ]


METRIC_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def used_metrics(plan: Plan) -> list[Metric]:
    """Every metric an alert rule or panel uses (the contract test checks the `vllm` ones against a scrape)."""
    exprs = [r.expr for r in alert_rules(plan)] + [q for p in panels(plan) for q, _ in p.targets]
    known = {m.name: m for m in METRICS}
    used = {known[tok] for e in exprs for tok in METRIC_RE.findall(e) if tok in known}
    return sorted(used, key=lambda m: m.name)


# ---------------------------------------------------------------- serialized files

def alerts_file(plan: Plan) -> dict:
    return {"groups": [{
        "name": f"selfhost-{plan.name}",
        "rules": [{
            "alert": r.name,
            "expr": r.expr,
            "for": r.for_,
            "labels": {"severity": r.severity, "deployment": plan.name},
            "annotations": {"summary": r.summary, "description": r.description,
                            "runbook": f"selfhost runbook {r.runbook} (files/runbooks/{_runbook_file(r.runbook)})"},
        } for r in alert_rules(plan)],
    }]}


def _runbook_file(topic: str) -> str:
    return "RUNBOOK.md" if topic == "overview" else f"{topic}.md"


def blackbox_jobs(plan: Plan, targets: list[str], addresses: list[str]) -> list[dict]:
    """Scrape jobs that make blackbox_exporter probe the gateways' certificates and the hosts."""
    def job(name: str, module: str, probe_targets: list[str]) -> dict:  # fresh objects: no YAML anchors
        return {"job_name": name, "metrics_path": "/probe", "params": {"module": [module]},
                "static_configs": [{"targets": list(probe_targets), "labels": {"deployment": plan.name}}],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__param_target"], "target_label": "instance"},
                    {"target_label": "__address__", "replacement": BLACKBOX_ADDRESS},
                ]}

    j = jobs(plan)
    return [job(j["tls"], "selfhost_tls", targets), job(j["host"], "selfhost_icmp", addresses)]


def blackbox_file(plan: Plan) -> dict:
    """blackbox_exporter modules (merge into its blackbox.yml)."""
    return {"modules": {
        "selfhost_tls": {"prober": "tcp", "timeout": "5s",
                         "tcp": {"tls": True,
                                 "tls_config": {"ca_file": f"/etc/prometheus/selfhost/{plan.name}-ca.crt"}}},
        "selfhost_icmp": {"prober": "icmp", "timeout": "5s"},
    }}


def dashboard(plan: Plan) -> dict:
    ds = {"type": "prometheus", "uid": "${datasource}"}
    out = []
    for i, p in enumerate(panels(plan)):
        out.append({
            "id": i + 1,
            "type": "timeseries",
            "title": p.title,
            "description": p.description,
            "datasource": ds,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
            "targets": [{"refId": chr(ord("A") + k), "datasource": ds, "expr": q, "legendFormat": legend}
                        for k, (q, legend) in enumerate(p.targets)],
        })
    return {
        "title": f"selfhost: {plan.name}",
        "uid": f"selfhost-{plan.name}"[:40],
        "tags": ["selfhost", "vllm"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource",
                                 "query": "prometheus", "current": {}, "hide": 0}]},
        "annotations": {"list": []},
        "description": f"{plan.model.id} as '{plan.vllm.served_model_name}', vLLM {plan.runtime.vllm_version}",
        "panels": out,
    }
