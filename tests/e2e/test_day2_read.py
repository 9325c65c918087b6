"""Read-only day-2 commands against the real deployment (session fixture `deployed_site`):
`selfhost doctor`, `status`, `bench` and `logs` run as a user runs them (a subprocess of the CLI), and
doctor's exit codes 1 (a check failed) and 2 (a host unreachable) are provoked for real.

Numbers seen (status after chat completions) are printed; run with `-s` to see them.

The raw per-host answers of the status/doctor/logs calls marked below (healthy hosts, a stopped gateway,
an unreachable host) are written as unit-test cases (`toolkit.deploy.capture`, secrets scrubbed, and
checked here to hold no API key of the site): into a temp folder of the session (printed), or, with
SELFHOST_CAPTURE_DIR set, there — this refreshes tests/unit/cases/ops/captured:
    SELFHOST_CAPTURE_DIR=tests/unit/cases/ops/captured CI=true flock /tmp/selfhost-e2e.lock \
        .venv/bin/python -m pytest tests/e2e/test_day2_read.py -q -p no:cacheprovider -x -s
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import gateway_request, selfhost_cli
from toolkit.deploy import capture

pytestmark = pytest.mark.e2e

DOCTOR_CHECKS = {"reachable", "os", "memory", "cpu_flags", "disk", "gateway_port", "server_container",
                 "gateway_container", "gateway_answers", "server_via_gateway", "certificate", "disk_free_now"}


def _chat(site, host, max_tokens: int = 16) -> dict:
    body = {"model": "tiny", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hello world"}]}
    status, answer = gateway_request(site["ca"], host, "/v1/chat/completions", key=site["keys"][host.name], body=body)
    assert status == 200, status
    return answer


@pytest.fixture(scope="module")
def site(deployed_site, tmp_path_factory):
    captured = Path(CAPTURE_TO).resolve() if CAPTURE_TO else tmp_path_factory.mktemp("captured")
    return {**deployed_site, "cwd": tmp_path_factory.mktemp("day2"), "captured": captured}


CAPTURE_TO = os.environ.get(capture.DIR_ENV)  # read once: the fixture below takes it out of the CLI's environment


@pytest.fixture(autouse=True)
def _capture_nothing_by_default(monkeypatch):
    """Only the calls a test names with `_keep_as` write a case (the README test must not overwrite them)."""
    monkeypatch.delenv(capture.DIR_ENV, raising=False)
    monkeypatch.delenv(capture.NAME_ENV, raising=False)


def _keep_as(monkeypatch, site, name: str | None) -> None:
    """The CLI calls that follow write their raw readout as case `name` (None: stop)."""
    if name is None:
        monkeypatch.delenv(capture.DIR_ENV, raising=False)
        return
    monkeypatch.setenv(capture.DIR_ENV, str(site["captured"]))
    monkeypatch.setenv(capture.NAME_ENV, name)


def _assert_kept_without_keys(site, name: str) -> None:
    """A case written by this run names no API key of the site (the scrub, checked against the real keys)."""
    path = site["captured"] / f"{name}.json"
    text = path.read_text()
    assert json.loads(text)["values"] or json.loads(text)["result"]["failed"], name
    for key in site["keys"].values():
        assert key not in text, name
    print(f"\n[e2e] captured {path} ({len(text)} bytes)", flush=True)


def _by_host(checks: list[dict]) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for c in checks:
        out.setdefault(c["host"], {})[c["name"]] = c
    return out


def test_doctor_json_all_ok(site, monkeypatch):
    _keep_as(monkeypatch, site, "doctor-healthy")
    res = selfhost_cli("doctor", "-i", site["site"], "--bundle", site["bundle"].path, "--json", cwd=site["cwd"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    _assert_kept_without_keys(site, "doctor-healthy")
    report = json.loads(res.stdout)
    assert set(report) == {"ok", "checks"} and report["ok"] is True
    hosts = _by_host(report["checks"])
    assert set(hosts) == {h.name for h in site["hosts"]}
    for host, checks in hosts.items():
        assert DOCTOR_CHECKS <= set(checks), (host, sorted(checks))
        for c in checks.values():
            assert set(c) == {"host", "name", "ok", "detail", "remedy"} and c["ok"] is True, c
        print(f"\n[e2e] doctor {host}: {len(checks)} checks ok; {checks['certificate']['detail']}", flush=True)


def test_status_shows_the_model_and_live_metrics(site, monkeypatch):
    for h in site["hosts"]:
        assert _chat(site, h)["usage"]["completion_tokens"] > 0
    stop = threading.Event()

    def load():  # keep tokens flowing on the first host while status samples /metrics
        while not stop.is_set():
            _chat(site, site["hosts"][0], max_tokens=48)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    _keep_as(monkeypatch, site, "status-healthy")
    try:  # PLAN form: finds the bundle deployed from this plan (same digest and hosts), renders nothing
        res = selfhost_cli("status", "-i", site["site"], site["plan_file"], "--json", "--sample", "4", cwd=site["cwd"])
    finally:
        stop.set()
        t.join(timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    _assert_kept_without_keys(site, "status-healthy")
    assert not (site["cwd"] / "build" / "tiny").exists(), "status reused the deployed bundle"
    report = json.loads(res.stdout)
    assert report["ok"] is True
    assert [s["host"] for s in report["hosts"]] == [h.name for h in site["hosts"]]
    for s in report["hosts"]:
        assert s["state"] == "running" and s["health"] == "healthy", s
        assert s["gateway_state"] == "running" and s["gateway_health"] == "healthy", s
        assert s["served_model"] == "tiny" and s["image"] == site["bundle"].vars.selfhost_images_vllm.ref
        assert s["plan_digest"] == site["plan"].digest()
        assert s["uptime_s"] > 0 and s["restarts"] is not None
        mt = s["metrics"]
        assert mt["generation_tokens_total"] > 0 and mt["prompt_tokens_total"] > 0, mt
        assert mt["requests_finished_total"] >= 1 and mt["request_errors_total"] == 0, mt
        assert 0 <= mt["kv_cache_usage_pct"] <= 100 and mt["requests_running"] >= 0 and mt["requests_waiting"] >= 0
        assert mt["window_s"] >= 3.5 and mt["generation_tokens_per_s"] is not None
        assert s["error"] is None, s["error"]
        print(f"\n[e2e] status {s['host']}: {s['state']}/{s['health']} model {s['served_model']} up {s['uptime_s']}s; "
              f"running {mt['requests_running']} waiting {mt['requests_waiting']} KV {mt['kv_cache_usage_pct']}% "
              f"prompt {mt['prompt_tokens_total']:.0f} gen {mt['generation_tokens_total']:.0f} tokens, "
              f"{mt['generation_tokens_per_s']} gen tok/s over {mt['window_s']}s, "
              f"{mt['requests_finished_total']:.0f} finished, {mt['http_5xx_total']} 5xx", flush=True)


def test_bench_runs_vllm_bench_serve_on_the_host(site):
    """`selfhost bench` runs vLLM's own client on the host, in the server's image on its internal network,
    and reports its result in vLLM's names beside the plan's prediction; nothing of the run stays behind."""
    h = site["hosts"][0]
    bundle = site["bundle"]
    args = ["bench", "-i", site["site"], site["plan_file"], "--host", h.name, "--concurrency", "2",
            "--num-prompts", "6", "--input-len", "32", "--output-len", "8", "--json"]
    dry = selfhost_cli(*args, "--dry-run", cwd=site["cwd"])
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    [op] = json.loads(dry.stdout)["operations"]
    argv = op["extravars"]["selfhost_bench_argv"]
    network = argv[argv.index("--network") + 1]
    assert network == bundle.vars.selfhost_network_internal and bundle.vars.selfhost_server.image in argv
    # The network the client joins has no route out (Docker's `internal`), like the server's.
    assert h.exec("docker", "network", "inspect", "--format", "{{.Internal}}", network).stdout.decode().strip() == "true"

    start = time.monotonic()
    res = selfhost_cli(*args, cwd=site["cwd"], timeout=900)
    wall = time.monotonic() - start
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads(res.stdout)
    r = doc["result"]
    assert doc["error"] is None and doc["host"] == h.name, doc
    assert (r["model"], r["num_prompts"], r["completed"], r["failed"], r["max_concurrency"]) == ("tiny", 6, 6, 0, 2), r
    assert r["total_output_tokens"] == 6 * 8  # --ignore-eos: exactly --output-len tokens per answer
    assert 0 < r["median_ttft_ms"] <= r["p99_ttft_ms"] and r["mean_tpot_ms"] > 0 and r["mean_itl_ms"] >= 0
    assert r["output_throughput"] == pytest.approx(r["total_output_tokens"] / r["duration"], rel=1e-6)
    assert r["predicted"] == site["plan"].performance.model_dump(mode="json")
    left = h.exec("docker", "ps", "-a", "-q", "--filter", "label=org.selfhost.role=bench").stdout.decode().strip()
    bench_dir = f"{bundle.vars.selfhost_root}/{bundle.vars.selfhost_name}/bench"
    assert left == "" and h.exec("find", bench_dir, "-mindepth", "1", check=False).stdout.decode().strip() == ""
    print(f"\n[e2e] bench {h.name} (vllm bench serve, {wall:.0f} s wall): {r['completed']} requests in "
          f"{r['duration']:.2f} s, {r['request_throughput']:.2f} req/s, {r['output_throughput']:.1f} output tok/s, "
          f"TTFT mean/median/p99 {r['mean_ttft_ms']:.1f}/{r['median_ttft_ms']:.1f}/{r['p99_ttft_ms']:.1f} ms, "
          f"TPOT mean {r['mean_tpot_ms']:.1f} ms, ITL p99 {r['p99_itl_ms']:.1f} ms "
          f"(plan: {r['predicted']['aggregate_tokens_per_s']} tok/s at {r['predicted']['at_concurrency']}, "
          f"{r['predicted']['per_user_tokens_per_s']} per user)", flush=True)


def test_logs_tail_returns_server_lines_and_no_key(site, monkeypatch):
    _keep_as(monkeypatch, site, "logs-tail")
    res = selfhost_cli("logs", "-i", site["site"], "--bundle", site["bundle"].path, "--tail", "20", "--json",
                    cwd=site["cwd"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    _assert_kept_without_keys(site, "logs-tail")
    _keep_as(monkeypatch, site, None)
    out = json.loads(res.stdout)
    assert out["errors"] == {}
    for h in site["hosts"]:
        lines = [ln for ln in out["lines"] if ln["host"] == h.name]
        assert 0 < len(lines) <= 20 and all(ln["ts"] for ln in lines), h.name
    assert any("/v1/chat/completions" in ln["text"] or "vllm" in ln["text"].lower() for ln in out["lines"])
    for key in site["keys"].values():
        assert key not in res.stdout
    print(f"\n[e2e] logs: {len(out['lines'])} lines, last: {out['lines'][-1]['text'][:120]}", flush=True)

    one = site["hosts"][1].name  # text form, one host, bounded --follow
    res = selfhost_cli("logs", "-i", site["site"], "--bundle", site["bundle"].path, "--host", one, "--tail", "3",
                    "--follow", "--max-polls", "2", cwd=site["cwd"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert 0 < len(res.stdout.splitlines()) <= 3 + 40 and f"{one} |" not in res.stdout


def test_doctor_exit_1_names_a_stopped_gateway(site, monkeypatch):
    h = site["hosts"][0]
    gateway = site["bundle"].vars.selfhost_gateway_container
    h.exec("docker", "stop", gateway)
    try:
        _keep_as(monkeypatch, site, "doctor-gateway-stopped")
        res = selfhost_cli("doctor", "-i", site["site"], "--bundle", site["bundle"].path, "--host", h.name, "--json",
                        cwd=site["cwd"])
        _keep_as(monkeypatch, site, "status-gateway-stopped")
        stat = selfhost_cli("status", "-i", site["site"], "--bundle", site["bundle"].path, "--host", h.name, "--json",
                            cwd=site["cwd"])
        _keep_as(monkeypatch, site, None)
    finally:
        h.exec("docker", "start", gateway)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    _assert_kept_without_keys(site, "doctor-gateway-stopped")
    assert stat.returncode == 1, stat.stdout[-3000:] + stat.stderr[-3000:]  # reachable, not serving
    [st] = json.loads(stat.stdout)["hosts"]
    assert st["state"] == "running" and st["gateway_state"] == "exited" and st["ok"] is False, st
    _assert_kept_without_keys(site, "status-gateway-stopped")
    report = json.loads(res.stdout)
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert report["ok"] is False and {"gateway_container", "gateway_answers"} <= failed, failed
    assert {c["host"] for c in report["checks"]} == {h.name}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        health = h.exec("docker", "inspect", "--format", "{{.State.Health.Status}}", gateway).stdout.decode().strip()
        if health == "healthy":
            break
        time.sleep(2)
    assert health == "healthy"


def test_doctor_exit_2_when_a_host_is_unreachable(site, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    shutil.copytree(site["bundle"].path, bundle, ignore=shutil.ignore_patterns("artifacts"))
    inv_file = bundle / "inventory" / "hosts.yml"
    inv = yaml.safe_load(inv_file.read_text())
    dead = site["hosts"][1].name
    group = inv.get("inference") or inv["all"]["children"]["inference"]
    group["hosts"][dead]["ansible_port"] = 1  # nothing listens there
    inv_file.write_text(yaml.safe_dump(inv))
    _keep_as(monkeypatch, site, "doctor-host-unreachable")
    res = selfhost_cli("doctor", "-i", site["site"], "--bundle", bundle, "--json", cwd=site["cwd"])
    _keep_as(monkeypatch, site, "status-host-unreachable")
    stat = selfhost_cli("status", "-i", site["site"], "--bundle", bundle, "--json", cwd=site["cwd"])
    _keep_as(monkeypatch, site, None)
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-3000:]
    _assert_kept_without_keys(site, "doctor-host-unreachable")
    assert stat.returncode == 2, stat.stdout[-3000:] + stat.stderr[-3000:]
    reachable = {s["host"]: s["reachable"] for s in json.loads(stat.stdout)["hosts"]}
    assert reachable == {site["hosts"][0].name: True, site["hosts"][1].name: False}, reachable
    _assert_kept_without_keys(site, "status-host-unreachable")
    report = json.loads(res.stdout)
    hosts = _by_host(report["checks"])
    assert report["ok"] is False
    assert hosts[dead] == {"reachable": hosts[dead]["reachable"]} and hosts[dead]["reachable"]["ok"] is False
    alive = site["hosts"][0].name
    assert hosts[alive]["reachable"]["ok"] and all(c["ok"] for c in hosts[alive].values())

    res = selfhost_cli("doctor", "-i", site["site"], "--bundle", site["cwd"] / "nope", "--json", cwd=site["cwd"])
    assert res.returncode == 2 and json.loads(res.stdout)["error"]["message"].endswith("is not a rendered bundle "
                                                                                      "(missing project, env/extravars, "
                                                                                      "inventory/hosts.yml)")


def _readme_day2_commands() -> list[str]:
    """The `selfhost …` lines of the README's Day 2 block, optional parts dropped, one command per `·`."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = text.split("## Day 2", 1)[1].split("```", 2)[1]
    out = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        for part in line.split("·"):
            part = re.sub(r"\[[^\]]*\]", "", part).strip()
            if part.startswith("selfhost "):
                out.append(" ".join(part.split()))
    return out


WRITES = ("upgrade", "rollback", "rotate-keys", "destroy", "unlock")


def test_every_readme_day2_command_runs_as_documented(site):
    """Each Day 2 line of the README, with the site, plan and host filled in, runs against the deployment:
    read-only commands for real, the writing ones with --dry-run (which never reaches the hosts' state)."""
    key_file = site["cwd"] / "readme-key"
    key_file.write_text(site["keys"][site["hosts"][0].name] + "\n")
    key_file.chmod(0o600)
    subs = {"mysite": str(site["site"]), "plan.yml": str(site["plan_file"]), "H": site["hosts"][0].name,
            "KEY": str(key_file), "TOPIC": ""}
    ran = []
    for line in _readme_day2_commands():
        words = [subs.get(w, w) for w in line.split()[1:]]
        words = [w for w in words if w]
        if words[0] == "templates":
            words = ["templates", "list", "-i", str(site["site"])]
        if words[0] == "keys":  # `keys add|list|revoke`: the read-only one runs (add/revoke are e2e-tested with the router)
            words = ["keys", "list", "-i", str(site["site"])]
        if words[0] == "bench":
            words += ["--concurrency", "1", "--num-prompts", "2", "--input-len", "16", "--output-len", "4"]
        if words[0] in WRITES:
            words.append("--dry-run")
        if words[0] == "logs":
            words += ["--tail", "5"]
        res = selfhost_cli(*words, cwd=site["cwd"], timeout=600)
        ran.append(" ".join(words[:2]))
        assert res.returncode == 0, f"`selfhost {' '.join(words)}` exit {res.returncode}: " \
                                    f"{(res.stdout + res.stderr)[-1500:]}"
        assert "internal error" not in (res.stdout + res.stderr).lower()
    assert {"status", "logs", "doctor", "upgrade", "rollback", "rotate-keys", "keys", "destroy", "runbook", "unlock"} <= \
        {r.split()[0] for r in ran}, ran
    print(f"\n[e2e] README day-2 commands run: {ran}", flush=True)
