"""`selfhost bench`: vLLM's own benchmark client (`vllm bench serve`) run on a host against its server.

The client runs in a throwaway container of the very image the server runs, joined to the server's
internal network (no route out), with the weights mounted read-only so the tokenizer loads offline.
It writes its JSON result into a private host folder that `playbooks/bench.yml` reads back. TTFT,
TPOT, ITL and throughput therefore have the definitions of published `vllm bench serve` runs
(shared/validation/vllm_bench_results.json), the runs the plan's speed model is fitted on; what the
client cannot do — put the plan's prediction beside the result — is `BenchResult.predicted`.

Pure apart from `server_of` (reads the bundle's extravars): `client_argv` decides the whole
`docker run`, `parse` reads the client's result, `shape` classifies the hosts' answers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit.deploy import readout
from toolkit.errors import ConfigError
from toolkit.plan.model import Performance
from toolkit.plan.vllm_args import vllm_cli
from toolkit.render.server import OFFLINE_ENV  # the client loads the tokenizer offline, like the server

FACT = readout.Fact(playbook="bench.yml", var="_selfhost_bench", kind=dict, nothing="bench reported nothing")
RESULT_MOUNT = "/results"
RESULT_FILE = "result.json"
TIMEOUT_RC = 124  # coreutils `timeout`: the client ran past its time limit
DEFAULT_INPUT_LEN = 256
DEFAULT_OUTPUT_LEN = 128


@dataclass(frozen=True)
class Server:
    """What the benchmark container needs of a bundle's server spec (`DeployVars.selfhost_server`)."""

    name: str
    """Deployment name (labels the benchmark container)."""
    container: str
    """Server container: its name is its alias on the internal network."""
    image: str
    """The server's image, which holds the benchmark client."""
    network: str
    """The server's internal network (no route out)."""
    port: int
    """Port the server listens on inside that network."""
    served_model_name: str
    """Model name requests ask for."""
    weights_dir: str
    """Host directory of the weights (mounted read-only: the tokenizer)."""
    model_mount: str
    """Where the server sees the weights; the client sees them at the same path."""
    root: str
    """Base directory on each host (the result folder lives under it)."""
    max_model_len: int | None = None
    """The server's `--max-model-len` (a request longer than it is refused)."""


@dataclass(frozen=True)
class Workload:
    """The client's load: `--dataset-name random` with fixed lengths, at most `concurrency` in flight."""

    concurrency: int
    """`--max-concurrency`: requests in flight at once."""
    num_prompts: int
    """`--num-prompts`: requests in all."""
    input_len: int
    """`--random-input-len`: prompt tokens per request."""
    output_len: int
    """`--random-output-len` with `--ignore-eos`: output tokens per request."""

    def to_dict(self) -> dict:
        return asdict(self)


def workload(plan: Performance | None, *, concurrency: int | None = None, num_prompts: int | None = None,
             input_len: int | None = None, output_len: int | None = None) -> Workload:
    """The plan's own workload (its lengths and the concurrency its figures are for), with overrides."""
    c = concurrency or (plan.at_concurrency if plan else None) or 4
    w = Workload(concurrency=c, num_prompts=num_prompts or max(5 * c, 20),
                 input_len=input_len or (plan.input_tokens if plan else 0) or DEFAULT_INPUT_LEN,
                 output_len=output_len or (plan.output_tokens if plan else 0) or DEFAULT_OUTPUT_LEN)
    if min(w.concurrency, w.num_prompts, w.input_len, w.output_len) < 1:
        raise ConfigError("--concurrency, --num-prompts, --input-len and --output-len must be positive")
    return w


def server_of(bundle: Path) -> Server:
    """The server spec of a rendered bundle (its `env/extravars`, the renderer's one contract)."""
    from toolkit.render.bundle import load_vars
    from toolkit.render.deploy_vars import DeployVars

    dv = DeployVars.model_validate(load_vars((Path(bundle) / "env" / "extravars").read_text()))
    s = dv.selfhost_server
    mml = s.argv[s.argv.index("--max-model-len") + 1] if "--max-model-len" in s.argv[:-1] else None
    return Server(name=dv.selfhost_name, container=s.container, image=s.image, network=s.network,
                  port=dv.selfhost_vllm_port, served_model_name=dv.selfhost_vllm_served_model_name,
                  weights_dir=dv.selfhost_weights_dir, model_mount=dv.selfhost_vllm_model_mount,
                  root=dv.selfhost_root, max_model_len=int(mml) if mml and mml.isdigit() else None)


def result_dir(server: Server, run_id: str) -> str:
    """Host folder of one run's result (created private by the playbook, removed after it is read)."""
    return f"{server.root}/{server.name}/bench/{run_id}"


def client_args(*, base_url: str, model: str, tokenizer: str, load: Workload, result_dir: str) -> list[str]:
    """The arguments of `vllm bench serve`: random prompts of fixed lengths (`--ignore-eos`: every answer
    has `output_len` tokens, as the plan assumes), the JSON result saved as `result_dir/result.json`."""
    return ["--backend", "vllm", "--base-url", base_url, "--model", model, "--tokenizer", tokenizer,
            "--dataset-name", "random", "--random-input-len", str(load.input_len),
            "--random-output-len", str(load.output_len), "--ignore-eos",
            "--num-prompts", str(load.num_prompts), "--max-concurrency", str(load.concurrency),
            "--ready-check-timeout-sec", "60", "--disable-tqdm",
            "--save-result", "--result-dir", result_dir, "--result-filename", RESULT_FILE]


def client_argv(server: Server, load: Workload, *, host_dir: str, timeout_s: int) -> list[str]:
    """The whole `docker run` of the benchmark client: same image and internal network as the server,
    weights read-only, the result folder its only writable mount, ended by `timeout` inside the container."""
    if server.max_model_len and load.input_len + load.output_len > server.max_model_len:
        raise ConfigError(f"--input-len {load.input_len} + --output-len {load.output_len} is more than the server's "
                          f"--max-model-len {server.max_model_len}", fix="ask for shorter requests")
    for path in (server.weights_dir, server.model_mount, host_dir):
        if "," in path or not path.startswith("/"):
            raise ConfigError(f"{path}: a host path for `docker run --mount` must be absolute and hold no comma")
    env = [arg for k, v in OFFLINE_ENV.items() for arg in ("--env", f"{k}={v}")]
    client = client_args(base_url=f"http://{server.container}:{server.port}", model=server.served_model_name,
                         tokenizer=server.model_mount, load=load, result_dir=RESULT_MOUNT)
    return ["docker", "run", "--rm", "--name", f"{server.container}-bench", "--network", server.network,
            "--security-opt", "no-new-privileges:true", "--label", f"org.selfhost.name={server.name}",
            "--label", "org.selfhost.role=bench", *env,
            "--mount", f"type=bind,source={server.weights_dir},target={server.model_mount},readonly",
            "--mount", f"type=bind,source={host_dir},target={RESULT_MOUNT}",
            "--entrypoint", "timeout", server.image, str(timeout_s), *vllm_cli("bench", "serve", *client)]


@dataclass(frozen=True)
class BenchResult:
    """One `vllm bench serve` run, in its own names and units (ms), beside the plan's prediction."""

    host: str
    """Inventory host whose server was measured."""
    model: str
    """Model name the requests asked for."""
    max_concurrency: int | None
    """Requests in flight at once (None: no cap)."""
    num_prompts: int
    """Requests sent."""
    completed: int
    """Requests answered in full."""
    failed: int
    """Requests that failed."""
    duration: float
    """Seconds from the first request to the last answer."""
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    """Completed requests per second."""
    output_throughput: float
    """Output tokens per second, all requests together."""
    total_token_throughput: float
    """Input plus output tokens per second."""
    mean_ttft_ms: float
    median_ttft_ms: float
    p99_ttft_ms: float | None
    mean_tpot_ms: float
    """Time per output token after the first, per request, averaged (1000 / it = a user's decode speed)."""
    median_tpot_ms: float
    p99_tpot_ms: float | None
    mean_itl_ms: float
    """Gap between two streamed chunks."""
    median_itl_ms: float
    p99_itl_ms: float | None
    predicted: Performance | None = None
    """The plan's speed model (`Plan.performance`), when a plan was given."""

    @property
    def per_user_tokens_per_s(self) -> float | None:
        """1000 / mean TPOT: the decode speed one user sees (the plan's `per_user_tokens_per_s`)."""
        return round(1000 / self.mean_tpot_ms, 2) if self.mean_tpot_ms > 0 else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_user_tokens_per_s"] = self.per_user_tokens_per_s
        d["predicted"] = self.predicted.model_dump(mode="json") if self.predicted is not None else None
        return d


def parse(data: dict[str, Any], *, host: str, predicted: Performance | None = None) -> BenchResult:
    """A `vllm bench serve --save-result` JSON document → BenchResult (ConfigError when it is not one)."""
    def num(key: str, required: bool = True) -> float | None:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            if required:
                raise ConfigError(f"vllm bench serve result: {key} missing or not a number ({value!r})")
            return None
        return float(value)

    if not isinstance(data, dict):
        raise ConfigError("vllm bench serve result: not a JSON object")
    mc = data.get("max_concurrency")
    return BenchResult(
        host=host, model=str(data.get("model_id") or ""), max_concurrency=mc if isinstance(mc, int) else None,
        num_prompts=int(num("num_prompts")), completed=int(num("completed")),
        failed=int(num("failed", False) or 0), duration=num("duration"),
        total_input_tokens=int(num("total_input_tokens")), total_output_tokens=int(num("total_output_tokens")),
        request_throughput=num("request_throughput"), output_throughput=num("output_throughput"),
        total_token_throughput=num("total_token_throughput"),
        **{f"{stat}_{m}_ms": num(f"{stat}_{m}_ms", stat != "p99")
           for m in ("ttft", "tpot", "itl") for stat in ("mean", "median", "p99")},
        predicted=predicted)


def shape(answers: dict[str, Any], *, predicted: Performance | None = None
          ) -> tuple[dict[str, BenchResult], dict[str, str]]:
    """Per-host reports of bench.yml (`readout.classify` answers) → (host → result, host → why none)."""
    results: dict[str, BenchResult] = {}
    errors: dict[str, str] = {}
    for host, raw in answers.items():
        if isinstance(raw, readout.Unreachable):
            errors[host] = f"unreachable: {raw.why}"
        elif isinstance(raw, readout.NoReport):
            errors[host] = raw.why
        elif raw.get("result") is None:
            rc = int(raw.get("rc") or 0)
            tail = " ".join(str(raw.get("stderr") or raw.get("stdout") or "").split()[-60:])
            why = f"timed out (rc {rc})" if rc == TIMEOUT_RC else f"exit {rc}"
            errors[host] = f"vllm bench serve wrote no result ({why}): {tail[-600:]}"
        else:
            try:
                results[host] = parse(raw["result"], host=host, predicted=predicted)
            except ConfigError as exc:
                errors[host] = exc.message
    return results, errors


def outcome(ran, host: str, *, predicted: Performance | None = None) -> tuple[BenchResult | None, str | None]:
    """The result of one executed bench operation (`operations.Executed`) on `host`, or why there is none."""
    run = readout.Readout(ran.result, ran.reports)
    answers = readout.classify(FACT, [host], ran.reports, run.unreachable(), run.failures())
    results, errors = shape(answers, predicted=predicted)
    return results.get(host), errors.get(host)
