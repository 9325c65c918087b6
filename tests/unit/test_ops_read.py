"""Read-only day-2 commands, pure parts: /metrics parsing, status shaping, doctor's check list,
JSON contract and exit codes, log merging/redaction/follow. Real runs: tests/e2e/test_day2_read.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.operate import doctor
from toolkit.operate import logs
from toolkit.operate import status
from toolkit.render import monitoring as m
from toolkit.deploy.runner import DeployResult, FailedTask, HostStats
from toolkit.deploy import capture
from toolkit.deploy import readout
from toolkit.deploy.readout import Readout

CASES = Path(__file__).parent / "cases" / "ops"
METRICS_1 = (CASES / "vllm-metrics-1.txt").read_text()
METRICS_2 = (CASES / "vllm-metrics-2.txt").read_text()
# Raw per-host readouts of a real e2e run (tests/e2e/test_day2_read.py with SELFHOST_CAPTURE_DIR): what
# ansible-runner returned for status.yml / doctor.yml / logs.yml on the two test hosts, secrets scrubbed.
CAPTURED = CASES / "captured"


def _captured(name: str) -> dict:
    return json.loads((CAPTURED / f"{name}.json").read_text())


def _replay(case: dict, fact: readout.Fact) -> dict:
    """A captured run → what `readout.gather` answers for it (the same Readout and classify code)."""
    assert (case["playbook"], case["var"]) == (fact.playbook, fact.var)
    r = case["result"]
    result = DeployResult(status=r["status"], rc=r["rc"], check=r["check"],
                          hosts={h: HostStats(**s) for h, s in r["hosts"].items()},
                          failed=[FailedTask(**f) for f in r["failed"]])
    run = Readout(result=result, values=case["values"])
    return readout.classify(fact, case["hosts"], run.values, run.unreachable(), run.failures())


# ---------------------------------------------------------------- /metrics

def test_parse_prometheus_reads_the_captured_vllm_sample():
    """vllm-0.32-metrics-captured.txt: /metrics of the pinned vLLM CPU server (tiny model), fresh start."""
    s = status.parse_prometheus((CASES / "vllm-0.32-metrics-captured.txt").read_text())
    used = [m.RUNNING, m.WAITING, m.KV_USAGE, m.PROMPT_TOKENS, m.GENERATION_TOKENS, m.FINISHED]
    for metric in used:
        assert metric.name in s, metric.name
    assert all(labels.get("model_name") == "tiny" for labels, _ in s["vllm:generation_tokens_total"])
    reasons = {labels["finished_reason"] for labels, _ in s["vllm:request_success_total"]}
    assert {"stop", "length", "abort", "error"} <= reasons
    assert any(name.endswith("_bucket") for name in s)  # histograms parse too
    mt = status.shape_metrics(s, s, 3.0)
    assert (mt.requests_running, mt.kv_cache_usage_pct, mt.generation_tokens_total, mt.request_errors_total) == (0, 0, 0, 0)
    assert mt.generation_tokens_per_s == 0.0 and mt.http_5xx_total is None  # no HTTP request served yet


def test_parse_prometheus_reads_the_synthetic_samples():
    """vllm-metrics-{1,2}.txt: the captured layout with traffic (numbers chosen for the rate tests)."""
    s = status.parse_prometheus(METRICS_2)
    assert {"vllm:request_success_total", "http_requests_total"} <= set(s)


def test_parse_prometheus_edge_cases():
    text = ('# HELP x A "quoted" help\n# TYPE x counter\n'
            'x_total{a="q\\"uote",b="back\\\\slash"} 3 1700000000000\n'
            'x_total{a="nan"} NaN\n'
            'y 1.5e3\n'
            'z{le="+Inf"} +Inf\n'
            'this is not a sample\n'
            'w{a="1"} not-a-number\n')
    s = status.parse_prometheus(text)
    assert s["x_total"][0] == ({"a": 'q"uote', "b": "back\\slash"}, 3.0)
    assert status.total(s, "x_total") == 3.0  # NaN ignored
    assert status.total(s, "x_total", a="nope") == 0.0
    assert status.total(s, "missing") is None
    assert s["y"] == [({}, 1500.0)] and s["z"][0][1] == float("inf") and "w" not in s


def test_shape_metrics_totals_and_rates():
    first, second = status.parse_prometheus(METRICS_1), status.parse_prometheus(METRICS_2)
    mt = status.shape_metrics(first, second, 4.0)
    assert mt.requests_running == 1.0 and mt.requests_waiting == 0.0
    assert mt.kv_cache_usage_pct == pytest.approx(3.1)
    assert mt.prompt_tokens_total == 52.0 and mt.generation_tokens_total == 120.0
    assert mt.generation_tokens_per_s == pytest.approx((120.0 - 40.0) / 4.0)
    assert mt.prompt_tokens_per_s == pytest.approx((52.0 - 26.0) / 4.0)
    assert mt.requests_finished_total == 3.0 and mt.request_errors_total == 1.0
    assert mt.http_5xx_total == 2.0 and mt.window_s == 4.0
    assert status.shape_metrics(first, second, None).generation_tokens_per_s is None


def _raw(**over):
    """Hand-built status.yml report, for what the captured runs (below) cannot show: GPU lines (the test hosts
    are CPU-only), a pinned --revision, a known StartedAt and metrics chosen so every rate is exact, and the
    broken states (no container, unhealthy, unreadable /metrics). Same layout as captured/status-*.json."""
    raw = {
        "vllm": {"State": {"Status": "running", "StartedAt": "2025-01-01T00:00:00.5Z",
                           "Health": {"Status": "healthy", "Log": []}},
                 "RestartCount": 0, "Image": "selfhost/vllm-cpu:0.32.0", "ImageId": "sha256:abc",
                 "Args": ["--model", "/models/tiny", "--served-model-name", "tiny", "--revision=r1", "--port", "8000"],
                 "Labels": {"org.selfhost.plan-digest": "0123456789abcdef"}},
        "vllm_error": None,
        "gateway": {"State": {"Status": "running", "Health": {"Status": "healthy"}}, "RestartCount": 0,
                    "Image": "nginx:1.27"},
        "metrics": json.dumps([{"t": 1735689600.5 + 3600, "text": METRICS_1},
                               {"t": 1735689600.5 + 3604, "text": METRICS_2}]),
        "metrics_error": "",
        "gpus": [],
    }
    raw.update(over)
    return raw


def test_shape_host_builds_the_typed_status():
    st = status.shape_host("h1", _raw(gpus=["0, NVIDIA H100 80GB HBM3, 70123, 81559, 37", "garbage"]))
    assert (st.state, st.health, st.served_model, st.model, st.revision) == ("running", "healthy", "tiny", "/models/tiny", "r1")
    assert st.plan_digest == "0123456789abcdef" and st.image == "selfhost/vllm-cpu:0.32.0"
    assert st.uptime_s == pytest.approx(3604.0)  # from StartedAt to the second sample, host clock
    assert st.gpus == [status.Gpu(0, "NVIDIA H100 80GB HBM3", 70123, 81559, 37)]
    assert st.metrics.window_s == 4.0 and st.ok and st.error is None
    d = st.to_dict()
    assert d["ok"] is True and d["metrics"]["generation_tokens_total"] == 120.0
    json.dumps(d)  # serializable as is


def test_shape_host_missing_or_unhealthy():
    st = status.shape_host("h1", _raw(vllm=None, vllm_error="No such container", metrics="", gateway=None))
    assert st.state == "missing" and st.gateway_state == "missing" and not st.ok and "No such container" in st.error
    bad = _raw(metrics="", metrics_error="Error: connection refused")
    bad["vllm"]["State"]["Health"]["Status"] = "unhealthy"
    st = status.shape_host("h1", bad, now=1735689600.5 + 10)
    assert not st.ok and st.uptime_s == 10.0 and "connection refused" in st.error
    assert status.shape_host("h1", _raw(metrics="{not json")).error.startswith("could not read /metrics")
    assert not status.unreachable_host("h2", "ssh: connect refused").ok


def test_parse_docker_time():
    assert status.parse_docker_time("2025-01-01T00:00:00Z") == 1735689600.0
    assert status.parse_docker_time("2025-01-01T00:00:00.123456789Z") == pytest.approx(1735689600.123456789)
    assert status.parse_docker_time("2025-01-01T02:00:00+02:00") == 1735689600.0
    assert status.parse_docker_time("0001-01-01T00:00:00Z") is None and status.parse_docker_time("junk") is None


# ---------------------------------------------------------------- status: captured runs

def _sample_value(text: str, name: str) -> float:
    """Sum of a metric's series in one raw /metrics sample, read by a plain regex (not the parser under test)."""
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_status_of_a_captured_healthy_run():
    """Both test hosts serving the tiny model while chat completions ran (`status --sample 4`)."""
    case = _captured("status-healthy")
    statuses = status.shape(_replay(case, status.FACT))
    assert [s.host for s in statuses] == case["hosts"] and len(statuses) == 2
    for st in statuses:
        raw = case["values"][st.host]
        assert st.ok and st.reachable and st.error is None, st
        assert (st.state, st.health, st.gateway_state, st.gateway_health) == ("running", "healthy", "running", "healthy")
        assert st.served_model == "tiny" and st.model.startswith("/") and st.revision is None
        assert re.fullmatch(r"[0-9a-f]{16}", st.plan_digest) and st.image == raw["vllm"]["Image"]
        assert st.gpus == [] and st.restarts == 0 and st.uptime_s > 0  # CPU hosts: no nvidia-smi
        first, second = json.loads(raw["metrics"])
        mt = st.metrics
        assert mt.window_s == pytest.approx(second["t"] - first["t"], abs=0.01) and mt.window_s >= 4.0
        gen = [_sample_value(x["text"], m.GENERATION_TOKENS.name) for x in (first, second)]
        assert mt.generation_tokens_total == gen[1] > 0
        assert mt.generation_tokens_per_s == pytest.approx((gen[1] - gen[0]) / (second["t"] - first["t"]), abs=0.01)
        assert mt.prompt_tokens_total == _sample_value(second["text"], m.PROMPT_TOKENS.name) > 0
        assert mt.request_errors_total == 0 and mt.requests_finished_total >= 1
        assert 0 <= mt.kv_cache_usage_pct <= 100
        json.dumps(st.to_dict())
    busy, idle = statuses  # the e2e test kept requests flowing on the first host only while status sampled
    assert busy.metrics.generation_tokens_per_s > 0 and idle.metrics.generation_tokens_per_s == 0


def test_status_of_a_captured_stopped_gateway():
    """`docker stop` of the gateway on one host: reachable, server fine, not serving (exit 1 in the CLI)."""
    [st] = status.shape(_replay(_captured("status-gateway-stopped"), status.FACT))
    assert st.reachable and (st.state, st.health) == ("running", "healthy") and st.metrics is not None
    assert st.gateway_state == "exited" and not st.ok


def test_status_of_a_captured_unreachable_host():
    """The second host's SSH port pointed at 1 (nothing listens): the first still reads fine."""
    case = _captured("status-host-unreachable")
    up, down = status.shape(_replay(case, status.FACT))
    assert up.ok and up.metrics is not None
    assert not down.reachable and not down.ok and down.state is None and "port 1" in down.error


# ---------------------------------------------------------------- doctor

def _doctor(hosts, values, unreachable, failures):
    """doctor's parser over what `readout.gather` would answer for these raw reports."""
    return doctor.shape(readout.classify(doctor.FACT, hosts, values, unreachable, failures))


DOCTOR_CHECKS = {"reachable", "os", "memory", "cpu_flags", "disk", "gateway_port", "server_container",
                 "gateway_container", "gateway_answers", "server_via_gateway", "certificate", "disk_free_now"}


def _checks_by_host(rep) -> dict[str, dict[str, doctor.Check]]:
    out: dict[str, dict[str, doctor.Check]] = {}
    for c in rep.checks:
        out.setdefault(c.host, {})[c.name] = c
    return out


def test_doctor_contract_and_exit_0_on_a_captured_healthy_run():
    case = _captured("doctor-healthy")
    rep = doctor.shape(_replay(case, doctor.FACT))
    d = rep.to_dict()
    assert set(d) == {"ok", "checks"} and d["ok"] is True and rep.exit_code == 0
    assert all(set(c) == {"host", "name", "ok", "detail", "remedy"} for c in d["checks"])
    hosts = _checks_by_host(rep)
    assert list(hosts) == case["hosts"]
    for host, checks in hosts.items():
        assert DOCTOR_CHECKS <= set(checks), (host, sorted(checks))
        assert next(iter(checks)) == "reachable"  # first, then the playbook's own order
        assert all(c.detail and "\n" not in c.detail and "  " not in c.detail for c in checks.values())
    json.dumps(d)


def test_doctor_folds_whitespace_and_reads_string_booleans():
    """Hand-built: the captured checks are one-line with real booleans; a role may report either."""
    item = {"name": "os", "ok": "False", "detail": "os   is\n fine", "remedy": "fix os"}
    rep = _doctor(["a"], {"a": [item, {**item, "name": "disk", "ok": "yes"}]}, {}, {})
    assert [(c.name, c.ok, c.detail) for c in rep.checks[1:]] == [("os", False, "os is fine"), ("disk", True, "os is fine")]
    assert rep.exit_code == 1


def test_doctor_a_captured_stopped_gateway_is_exit_1():
    case = _captured("doctor-gateway-stopped")
    rep = doctor.shape(_replay(case, doctor.FACT))
    assert rep.exit_code == 1 and rep.to_dict()["ok"] is False and not rep.could_not_run
    failed = {c.name for c in rep.failed()}
    assert {"gateway_container", "gateway_answers"} <= failed and "server_container" not in failed, failed
    assert {c.host for c in rep.checks} == set(case["hosts"]) and len(case["hosts"]) == 1


def test_doctor_a_captured_unreachable_host_is_exit_2():
    case = _captured("doctor-host-unreachable")
    alive, dead = case["hosts"]
    rep = doctor.shape(_replay(case, doctor.FACT))
    assert rep.exit_code == 2 and rep.could_not_run == [dead]
    hosts = _checks_by_host(rep)
    assert list(hosts[dead]) == ["reachable"] and not hosts[dead]["reachable"].ok
    assert "port 1" in hosts[dead]["reachable"].detail
    assert DOCTOR_CHECKS <= set(hosts[alive]) and all(c.ok for c in hosts[alive].values())


def test_doctor_broken_runs_are_exit_2():
    """Hand-built: the e2e hosts cannot produce a playbook syntax error or a sudo password prompt."""
    rep = _doctor(["a"], {}, {}, {"*": "ansible-playbook: syntax error"})
    assert rep.exit_code == 2 and "syntax error" in rep.checks[0].detail
    rep = _doctor(["a"], {"a": "VARIABLE IS NOT DEFINED!"}, {}, {"a": "Gathering Facts: sudo: a password is required"})
    assert rep.exit_code == 2 and "sudo" in rep.checks[0].detail


def test_readout_sorts_unreachable_from_failed():
    """Hand-built: host c (reached, but Python missing) is a state the e2e hosts cannot be put in;
    the unreachable half is replayed from a real run in test_doctor_a_captured_unreachable_host_is_exit_2."""
    result = DeployResult(status="failed", rc=4, check=True,
                          hosts={"a": HostStats(ok=5), "b": HostStats(unreachable=1), "c": HostStats(failed=1)},
                          failed=[FailedTask("b", "setup", "Gathering Facts", "ssh: port 1 refused"),
                                  FailedTask("c", "setup", "Gathering Facts", "python missing")])
    r = Readout(result=result, values={"a": []})
    assert r.unreachable() == {"b": "ssh: port 1 refused"}
    assert r.failures()["c"] == "Gathering Facts: python missing"


def test_doctor_cli_bad_bundle_is_exit_2_with_json(tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "toolkit", "init", str(site)], check=True, capture_output=True)
    (site / "hosts.yml").write_text("inference:\n  hosts:\n    h1: {ansible_host: 10.0.0.1}\n")
    proc = subprocess.run([sys.executable, "-m", "toolkit", "doctor", "-i", str(site), "--bundle", str(tmp_path / "nope"),
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is False and out["checks"] == [] and "not a rendered bundle" in out["error"]["message"]
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "toolkit", "status", "-i", str(site)], capture_output=True, text=True)
    # `-i SITE` alone is how the README shows it: with nothing deployed yet it says so, in one line
    assert proc.returncode == 1 and "no deployment recorded for this site yet" in proc.stderr


# ---------------------------------------------------------------- logs

OUT = ("2025-01-01T00:00:01.5Z INFO:     10.0.0.2:5000 - \"POST /v1/chat/completions HTTP/1.1\" 200 OK\n"
       "2025-01-01T00:00:03.000000001Z INFO: done\n")
ERR = ("2025-01-01T00:00:01.25Z INFO 01-01 00:00:01 [engine] Added request chatcmpl-1\n"
       "2025-01-01T00:00:02Z WARN headers={'authorization': 'Bearer sk-abcdef0123456789'} api_key=0123456789abcdef\n")


def test_logs_merge_streams_by_time_and_redact_keys():
    lines = logs.parse("h1", OUT, ERR)
    assert [ln.text[:13] for ln in lines] == ["INFO 01-01 00", "INFO:     10.", "WARN headers=", "INFO: done"]
    warn = lines[2].text
    assert "sk-abcdef" not in warn and "0123456789abcdef" not in warn and warn.count(logs.REDACTED) == 2
    assert lines[0].ts == "2025-01-01T00:00:01.250000000Z" and lines[0].host == "h1"


@pytest.mark.parametrize("text,expected", [
    ("Authorization: Bearer abcdefgh12345678", "Authorization: Bearer [REDACTED]"),
    ('"Bearer 0123456789abcdef0123" 1;', '"Bearer [REDACTED]" 1;'),
    ("token=supersecretvalue rest", "token=[REDACTED] rest"),
    ("GET /v1/models 200 OK in 3 ms", "GET /v1/models 200 OK in 3 ms"),
])
def test_redact(text, expected):
    assert logs.redact(text) == expected


def test_logs_of_a_captured_run():
    """`logs --tail 20` of both hosts after chat completions: vLLM's own lines, merged by Docker's timestamps."""
    case = _captured("logs-tail")
    lines, errors = logs.shape(_replay(case, logs.FACT))
    assert errors == {}
    for host in case["hosts"]:
        mine = [ln for ln in lines if ln.host == host]
        raw = case["values"][host]
        assert 0 < len(mine) == len(raw["stdout"].splitlines()) + len(raw["stderr"].splitlines()) <= 20, host
    assert [ln.ts for ln in lines] == sorted(ln.ts for ln in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", ln.ts) for ln in lines)
    assert any("/v1/chat/completions" in ln.text or "vllm" in ln.text.lower() for ln in lines)


def test_logs_shape_reports_per_host_errors():
    """Hand-built b: a missing container is not a state of the shared e2e deployment."""
    ok = _captured("logs-tail")["values"]
    host = next(iter(ok))
    values = {host: ok[host], "b": {"rc": 1, "stdout": "", "stderr": "Error: No such container: x"}}
    lines, errors = logs.shape(readout.classify(logs.FACT, [host, "b", "c"], values, {"c": "unreachable"}, {}))
    assert lines and {ln.host for ln in lines} == {host}
    assert set(errors) == {"b", "c"} and "No such container" in errors["b"]


def test_follow_polls_with_since_and_emits_only_new_lines():
    batches = [logs.parse("h", OUT, ""), logs.parse("h", OUT + "2025-01-01T00:00:04Z new line\n", "")]
    asked, emitted, slept = [], [], []

    def read(since):
        asked.append(since)
        return batches[min(len(asked) - 1, 1)], {}

    polls = logs.follow(read, lambda lines, errors: emitted.append([ln.text for ln in lines]), since="10m",
                        max_polls=3, interval_s=2.0, sleep=slept.append)
    assert polls == 3 and slept == [2.0, 2.0]
    assert asked == ["10m", "2025-01-01T00:00:03.000000001Z", "2025-01-01T00:00:04.000000000Z"]
    assert emitted == [[batches[0][0].text, "INFO: done"], ["new line"], []]


def test_gather_classifies_each_host_once_for_every_fact():
    fact = readout.Fact(playbook="x.yml", var="_x", kind=dict, nothing="x reported nothing")
    got = readout.classify(fact, ["a", "b", "c", "d"], {"a": {"k": 1}, "c": readout.UNDEFINED, "e": {}},
                           {"b": "ssh: refused"}, {"c": "Gathering Facts: sudo: a password is required"})
    assert got == {"a": {"k": 1}, "b": readout.Unreachable("ssh: refused"),
                   "c": readout.NoReport("Gathering Facts: sudo: a password is required"),
                   "d": readout.NoReport("x reported nothing"), "e": {}}
    statuses = status.shape(got)
    assert [(s.host, s.reachable) for s in statuses] == [("a", True), ("b", False), ("c", False), ("d", False),
                                                         ("e", True)]


# ---------------------------------------------------------------- the capture hook (toolkit/deploy/capture.py)

def test_capture_writes_nothing_unless_asked(tmp_path, monkeypatch):
    monkeypatch.delenv(capture.DIR_ENV, raising=False)
    result = DeployResult(status="successful", rc=0, check=True, hosts={"a": HostStats(ok=3)})
    assert capture.record("doctor.yml", "_v", ["a"], result, {"a": []}) is None
    assert not any(tmp_path.iterdir())


def test_capture_keeps_the_run_and_scrubs_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv(capture.DIR_ENV, str(tmp_path / "cases"))
    monkeypatch.setenv(capture.NAME_ENV, "doctor-x")
    result = DeployResult(status="failed", rc=4, check=True, hosts={"a": HostStats(ok=3), "b": HostStats(unreachable=1)},
                          failed=[FailedTask("b", "setup", "Gathering Facts", "ssh: connect to host port 1: refused")])
    key = "sk-0123456789abcdef0123"
    values = {"a": [{"name": "gateway", "ok": True, "detail": f"Authorization: Bearer {key} api_key={key}",
                     "api_key": key, "env": [f"SELFHOST_TOKEN={key}"]}]}
    path = capture.record("doctor.yml", doctor.FACT.var, ["a", "b"], result, values)
    assert path == tmp_path / "cases" / "doctor-x.json"
    text = path.read_text()
    assert key not in text and text.count(capture.SCRUBBED) == 4
    case = json.loads(text)
    assert (case["playbook"], case["hosts"]) == ("doctor.yml", ["a", "b"])
    assert case["result"]["failed"][0]["message"] == "ssh: connect to host port 1: refused"  # kept: no secret
    assert _replay(case, doctor.FACT)["b"] == readout.Unreachable("ssh: connect to host port 1: refused")
