"""The rendered Prometheus alert rules, checked by Prometheus's own tool.

`promtool check rules` parses every golden alerts.yml (a PromQL typo fails here, not in the site's
Prometheus); `promtool test rules` replays synthetic series and asserts which alerts fire, with
the labels and annotations a pager would show. Debian's `prometheus` package provides promtool
(scripts/test.sh installs it); under CI=true a missing promtool fails instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "golden"
RULE_FILES = sorted(GOLDEN.glob("*/expected/prometheus/alerts.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool not found: install Debian's prometheus package (scripts/test.sh does)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def test_golden_rule_files_exist():
    assert len(RULE_FILES) >= 3, RULE_FILES


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.parents[2].name)
def test_promtool_check_rules(promtool, rules):
    done = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _rule(rules: dict, name: str) -> dict:
    return next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name)


def _expected(rule: dict, instance: str) -> dict:
    """What promtool should report: the rule's labels plus the series' own, annotations expanded."""
    def expand(text: str) -> str:
        return text.replace("{{ $labels.instance }}", instance)

    return {"exp_labels": {**rule["labels"], "alertname": rule["alert"], "instance": instance},
            "exp_annotations": {k: expand(v) for k, v in rule["annotations"].items()}}


def test_promtool_test_rules_fire_as_designed(promtool, tmp_path):
    rules_path = GOLDEN / "gpu-tp1-llama8b-l40s" / "expected" / "prometheus" / "alerts.yml"
    rules = yaml.safe_load(rules_path.read_text())
    job = rules["groups"][0]["name"]  # selfhost-<name>: the server job the rules select
    down, kv, restarted = (_rule(rules, n) for n in ("SelfhostServerDown", "SelfhostKVCacheSaturated",
                                                      "SelfhostEngineRestarted"))
    with_up = {"labels": {**down["labels"], "alertname": down["alert"], "instance": "h1", "job": job}}
    exp_down = _expected(down, "h1")
    exp_down["exp_labels"]["job"] = job
    tests = {
        "rule_files": [str(rules_path)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                # h1 stops answering after 2 minutes; h2 keeps answering.
                {"series": f'up{{job="{job}",instance="h1"}}', "values": "1 1 0 0 0 0 0 0"},
                {"series": f'up{{job="{job}",instance="h2"}}', "values": "1 1 1 1 1 1 1 1"},
                # h2's KV cache sits at 95 % for 20 minutes; h1 at 50 %.
                {"series": f'vllm:kv_cache_usage_perc{{job="{job}",instance="h2"}}', "values": "0.95x20"},
                {"series": f'vllm:kv_cache_usage_perc{{job="{job}",instance="h1"}}', "values": "0.5x20"},
                # h2's server restarted at minute 10.
                {"series": f'process_start_time_seconds{{job="{job}",instance="h2"}}', "values": "1000x9 1600x10"},
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": down["alert"], "exp_alerts": []},  # down for 1m < `for: 2m`
                {"eval_time": "5m", "alertname": down["alert"], "exp_alerts": [exp_down]},
                {"eval_time": "5m", "alertname": kv["alert"], "exp_alerts": []},  # not yet 10m over
                {"eval_time": "12m", "alertname": kv["alert"], "exp_alerts": [_expected(kv, "h2")]},
                {"eval_time": "5m", "alertname": restarted["alert"], "exp_alerts": []},
                {"eval_time": "11m", "alertname": restarted["alert"], "exp_alerts": [
                    {**_expected(restarted, "h2"), "exp_labels": {**_expected(restarted, "h2")["exp_labels"], "job": job}}]},
            ],
        }],
    }
    del with_up
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
