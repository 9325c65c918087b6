"""Read-only day-2 commands against the real deployment (session fixture `deployed_site`):
`selfhost doctor`, `status`, `bench` and `logs` run as a user runs them (a subprocess of the CLI), and
doctor's exit codes 1 (a check failed) and 2 (a host unreachable) are provoked for real.

Numbers seen (status after chat completions) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import gateway_request, selfhost_cli

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
    return {**deployed_site, "cwd": tmp_path_factory.mktemp("day2")}


def _by_host(checks: list[dict]) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for c in checks:
        out.setdefault(c["host"], {})[c["name"]] = c
    return out


def test_doctor_json_all_ok(site):
    res = selfhost_cli("doctor", "-i", site["site"], "--bundle", site["bundle"].path, "--json", cwd=site["cwd"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert set(report) == {"ok", "checks"} and report["ok"] is True
    hosts = _by_host(report["checks"])
    assert set(hosts) == {h.name for h in site["hosts"]}
    for host, checks in hosts.items():
        assert DOCTOR_CHECKS <= set(checks), (host, sorted(checks))
        for c in checks.values():
            assert set(c) == {"host", "name", "ok", "detail", "remedy"} and c["ok"] is True, c
        print(f"\n[e2e] doctor {host}: {len(checks)} checks ok; {checks['certificate']['detail']}", flush=True)


def test_status_shows_the_model_and_live_metrics(site):
    for h in site["hosts"]:
        assert _chat(site, h)["usage"]["completion_tokens"] > 0
    stop = threading.Event()

    def load():  # keep tokens flowing on the first host while status samples /metrics
        while not stop.is_set():
            _chat(site, site["hosts"][0], max_tokens=48)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    try:  # PLAN form: finds the bundle deployed from this plan (same digest and hosts), renders nothing
        res = selfhost_cli("status", "-i", site["site"], site["plan_file"], "--json", "--sample", "4", cwd=site["cwd"])
    finally:
        stop.set()
        t.join(timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
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


def test_bench_through_the_gateway_reports_real_numbers(site):
    h = site["hosts"][0]
    key_file = site["cwd"] / "api-key"
    key_file.write_text(site["keys"][h.name] + "\n")
    key_file.chmod(0o600)
    # The test hosts' gateway port is published on a loopback port of its own, hence --url (not -i).
    res = selfhost_cli("bench", "--url", f"https://127.0.0.1:{h.https_port}", "--ca", site["ca"],
                    "--api-key-file", key_file, "--plan", site["plan_file"], "--concurrency", "2",
                    "--requests", "6", "--max-tokens", "16", "--duration", "120", "--json", cwd=site["cwd"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads(res.stdout)
    assert r["ok"] == 6 and r["errors"] == 0 and r["model"] == "tiny", r
    assert r["output_tokens_per_s"] > 0 and r["requests_per_s"] > 0
    # ITL is the gap between streamed chunks: with a 2-layer model two tokens can share one TCP read,
    # so a median of 0 is a real reading here; TTFT is always positive.
    assert 0 < r["ttft_p50_s"] <= r["ttft_p95_s"] and 0 <= r["itl_p50_s"] <= r["itl_p95_s"]
    assert r["predicted"]["decode_tokens_per_s"] == site["plan"].performance.decode_tokens_per_s
    assert site["keys"][h.name] not in res.stdout + res.stderr
    print(f"\n[e2e] bench {h.name} through the gateway: {r['ok']} requests, {r['requests_per_s']:.2f} req/s, "
          f"{r['output_tokens_per_s']:.1f} output tok/s, TTFT p50/p95 {r['ttft_p50_s']:.3f}/{r['ttft_p95_s']:.3f} s, "
          f"ITL p50/p95 {r['itl_p50_s']:.3f}/{r['itl_p95_s']:.3f} s (plan: {r['predicted']})", flush=True)


def test_logs_tail_returns_server_lines_and_no_key(site):
    res = selfhost_cli("logs", "-i", site["site"], "--bundle", site["bundle"].path, "--tail", "20", "--json",
                    cwd=site["cwd"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
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


def test_doctor_exit_1_names_a_stopped_gateway(site):
    h = site["hosts"][0]
    gateway = site["bundle"].vars.selfhost_gateway_container
    h.exec("docker", "stop", gateway)
    try:
        res = selfhost_cli("doctor", "-i", site["site"], "--bundle", site["bundle"].path, "--host", h.name, "--json",
                        cwd=site["cwd"])
    finally:
        h.exec("docker", "start", gateway)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
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


def test_doctor_exit_2_when_a_host_is_unreachable(site, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(site["bundle"].path, bundle, ignore=shutil.ignore_patterns("artifacts"))
    inv_file = bundle / "inventory" / "hosts.yml"
    inv = yaml.safe_load(inv_file.read_text())
    dead = site["hosts"][1].name
    group = inv.get("inference") or inv["all"]["children"]["inference"]
    group["hosts"][dead]["ansible_port"] = 1  # nothing listens there
    inv_file.write_text(yaml.safe_dump(inv))
    res = selfhost_cli("doctor", "-i", site["site"], "--bundle", bundle, "--json", cwd=site["cwd"])
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-3000:]
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
        if words[0] == "bench":
            continue  # the test hosts publish their gateway on a loopback port of their own: see the bench test (--url)
        if words[0] in WRITES:
            words.append("--dry-run")
        if words[0] == "logs":
            words += ["--tail", "5"]
        res = selfhost_cli(*words, cwd=site["cwd"], timeout=600)
        ran.append(" ".join(words[:2]))
        assert res.returncode == 0, f"`selfhost {' '.join(words)}` exit {res.returncode}: " \
                                    f"{(res.stdout + res.stderr)[-1500:]}"
        assert "internal error" not in (res.stdout + res.stderr).lower()
    assert {"status", "logs", "doctor", "upgrade", "rollback", "rotate-keys", "destroy", "runbook", "unlock"} <= \
        {r.split()[0] for r in ran}, ran
    print(f"\n[e2e] README day-2 commands run: {ran}", flush=True)
