"""Every metric the shipped alert rules and Grafana dashboard use must exist in the pinned vLLM's /metrics.

A real vLLM CPU server (fixture `vllm_server`) answers one chat completion, so its histograms have
samples, then its Prometheus text is parsed here and checked against toolkit/monitoring.py. A vLLM
upgrade that renames a metric fails this test instead of leaving a Grafana panel saying "No data".
"""
from __future__ import annotations

import json
import re
import urllib.request

import pytest

from tests.unit.test_render import CASES
from toolkit.render import monitoring

pytestmark = pytest.mark.integration

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+\S+")


def parse_exposition(text: str) -> tuple[set[str], dict[str, str]]:
    """Prometheus text format → (sample names, {family: type}). Histogram/summary families add their suffixes."""
    samples: set[str] = set()
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
        elif line and not line.startswith("#"):
            m = SAMPLE_RE.match(line)
            if m:
                samples.add(m.group(1))
    for name, kind in types.items():
        if kind == "histogram":
            samples |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            samples |= {f"{name}_sum", f"{name}_count"}
        elif kind == "counter":
            samples.add(name if name.endswith("_total") else f"{name}_total")
    return samples, types


def test_parse_exposition():
    text = ('# HELP a_seconds x\n# TYPE a_seconds histogram\na_seconds_bucket{le="1.0"} 1.0\n'
            '# TYPE vllm:b counter\nvllm:b_total{model_name="m"} 3.0\nvllm:c 1\n')
    samples, types = parse_exposition(text)
    assert {"a_seconds_bucket", "a_seconds_count", "vllm:b_total", "vllm:c"} <= samples
    assert types["a_seconds"] == "histogram"


def _scrape(url: str) -> str:
    body = json.dumps({"model": _model(url), "messages": [{"role": "user", "content": "Hello there"}],
                       "max_tokens": 8}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as resp:
        return resp.read().decode()


def _model(url: str) -> str:
    with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as resp:
        return json.loads(resp.read())["data"][0]["id"]


@pytest.fixture(scope="module")
def scrape(vllm_server) -> str:
    return _scrape(vllm_server)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_used_vllm_metric_is_exported(case, scrape):
    plan = CASES[case]()
    samples, _ = parse_exposition(scrape)
    used = [m for m in monitoring.used_metrics(plan) if m.source == "vllm"]
    assert used, "no vLLM metric used: monitoring.used_metrics is broken"
    missing = [m.name for m in used if m.name not in samples]
    exported = sorted(s for s in samples if s.startswith("vllm:"))
    assert not missing, f"alerts/dashboard use metrics the pinned vLLM does not export: {missing}\nexported: {exported}"


def test_every_metric_in_an_expression_is_declared():
    """A metric typed straight into an expression (not via monitoring.METRICS) would escape the check above."""
    plan = CASES["cpu-tiny"]()
    declared = {m.name for m in monitoring.METRICS}
    exprs = [r.expr for r in monitoring.alert_rules(plan)] + [q for p in monitoring.panels(plan) for q, _ in p.targets]
    for expr in exprs:
        for name in re.findall(r"\b(vllm:[a-zA-Z0-9_:]+|[a-z_]+_(?:total|seconds|bucket|perc|expiry|success))\b", expr):
            assert name in declared, f"{name} in `{expr}` is not declared in monitoring.METRICS"


LABELS_USED = {"http_requests_total": "status", "vllm:request_success_total": "finished_reason"}


def test_labels_the_rules_filter_on_exist(scrape):
    """The 5xx and abort/error selectors filter on labels: a renamed label would match nothing, silently."""
    for name, label in LABELS_USED.items():
        lines = [ln for ln in scrape.splitlines() if ln.startswith(name + "{")]
        assert lines, f"{name} has no samples"
        assert any(f'{label}="' in ln for ln in lines), f"{name} has no '{label}' label: {lines[:3]}"
    reasons = {re.search(r'finished_reason="([^"]+)"', ln).group(1)
               for ln in scrape.splitlines() if ln.startswith("vllm:request_success_total{")}
    assert {"abort", "error"} <= reasons, reasons
