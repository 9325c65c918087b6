"""Property suite: hostile plan.yml edits and command-line numbers end in success or one short error, never a
traceback, an "internal error", a dumped input or a changed file. Fixed example counts keep it under ~30 s."""

from __future__ import annotations

import copy
import math

import pytest
import typer
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit import cli
from toolkit.errors import EXIT_USAGE, ConfigError, SelfhostError
from toolkit.plan import planner
from toolkit.plan.model import Plan
from toolkit.plan.validate import NAME_RE, SERVED_RE

PLAN_EXAMPLES = 400
CLI_EXAMPLES = 60
TRIED = {"plan.yml mutations": 0, "plan.yml accepted": 0, "cli argument sets": 0, "cli accepted": 0}

HOSTILE = [
    math.nan, math.inf, -math.inf, -1, 0, -(10**30), 10**30, 2**63, 1e308, -0.0, 0.5, 1, 7, 99999,
    "", " ", "{{ 7*7 }}", "{% raw %}", "$(reboot)", "`id`", "a\nb", "../../etc/passwd", "..", "-o", "--model=/x",
    "x" * 5000, "\x00", "ü", None, [], {}, True, False, [1, 2], {"a": 1}, "0x10", "1e400", "nan",
]
leaf = st.one_of(
    st.sampled_from(HOSTILE),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=40),
)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\nfuzz inputs tried: {TRIED}")


@pytest.fixture(scope="module")
def base_plan() -> dict:
    return planner.plan(planner.PlanRequest(model="llama-3.1-8b", gpus=["L4"])).plan.model_dump(mode="json")


def _paths(node, prefix=()):
    """Every key path in the plan dict (containers and leaves)."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(prefix + (i,))
            out += _paths(v, prefix + (i,))
    return out


def _mutate(data: dict, draw) -> dict:
    data = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent = data
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if op == "replace":
            parent[path[-1]] = copy.deepcopy(draw(leaf))  # a copy: HOSTILE's containers must stay empty
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["x", "{{x}}", "-o", "vllm", "model_", "a" * 300]))] = copy.deepcopy(draw(leaf))
    return data


def _short_error(message: str) -> None:
    lines = message.splitlines()
    assert 1 <= len(lines) <= 9, message[:2000]
    assert all(len(line) < 400 for line in lines), message[:2000]
    assert "Traceback" not in message and "internal error" not in message


@settings(max_examples=PLAN_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_plan_yml_mutations(tmp_path, base_plan, data):
    TRIED["plan.yml mutations"] += 1
    mutated = _mutate(base_plan, data.draw)
    f = tmp_path / "plan.yml"
    try:
        text = yaml.safe_dump(mutated, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return
    f.write_text(text)
    try:
        plan = Plan.load(f)
    except ConfigError as exc:
        _short_error(exc.message)
        return
    TRIED["plan.yml accepted"] += 1
    # What was accepted is safe to hand to the renderer: valid names, no option-looking values, finite numbers.
    assert NAME_RE.match(plan.name) and SERVED_RE.match(plan.vllm.served_model_name)
    argv = plan.vllm.to_argv()
    assert all(not v.startswith("-") for v in argv[1::2] if not v.startswith("--"))
    assert all(math.isfinite(x) for x in (plan.memory.total_gib, plan.capacity.max_concurrency, plan.model.weights_gib))
    assert f.read_text() == text  # loading never writes


_COMMAND = None


def _run(args: list[str]) -> tuple[int, str]:
    global _COMMAND
    if _COMMAND is None:
        cli._register()
        _COMMAND = typer.main.get_command(cli.app)
    res = CliRunner().invoke(_COMMAND, args)
    exc = res.exception
    if isinstance(exc, SelfhostError):
        return exc.exit_code, "error: " + exc.message + (f"\nTo fix: {exc.fix}" if exc.fix else "")
    if exc is not None and not isinstance(exc, SystemExit):
        return 99, f"internal error: {exc!r}"
    return res.exit_code, res.output


NUMBERS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-5", "0", "1", "15", "16", "1e15", "1000000000000000", "-0", "2.5",
                     "99999999999999999999", "0x10", "", "abc", "1e-300", "4096", "65"]),
    st.integers(-(10**16), 10**16).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
FLAGS = ["--context", "--budget", "--tokens-per-second", "--monthly-active-users", "--requests-per-month", "--top",
         "--gpu-memory-gib", "--concurrency", "--input-tokens", "--output-tokens", "--max-num-seqs",
         "--max-num-batched-tokens", "--gpu-memory-utilization", "--cpu-kv-space-gib", "--pp", "--routed-out"]


@settings(max_examples=CLI_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(flags=st.lists(st.tuples(st.sampled_from(FLAGS), NUMBERS), min_size=1, max_size=3), existing=st.booleans())
def test_cli_numbers(tmp_path, flags, existing):
    TRIED["cli argument sets"] += 1
    out = tmp_path / "plan.yml"
    out.unlink(missing_ok=True)
    if existing:  # a hand-written file at --out must survive every run
        out.write_text("# my hand-written notes\nname: keep-me\n")
    before = out.read_text() if existing else None
    args = ["plan", "llama-3.2-1b", "--gpu", "L4", "--json", "-o", str(out)]
    for flag, value in flags:
        args += [f"{flag}={value}"]
    code, text = _run(args)
    assert code != 99, text
    if existing:
        assert out.read_text() == before, "a plan run changed a file it did not write"
    if code == 0:
        TRIED["cli accepted"] += 1
        assert existing or Plan.is_unchanged_output(out)
        Plan.load(out)  # what the CLI accepted loads back
        return
    assert existing or not out.exists(), "a failed plan wrote a file"
    if code == EXIT_USAGE:  # click's own usage error ("not a valid integer"): one short message
        assert "Traceback" not in text and len(text.strip().splitlines()) <= 8
        return
    assert text.startswith("error: "), text[:500]
    # Refused input: one line (+ fix). "Nothing fits" is a report, not a refusal: its reasons are capped at six.
    assert len(text.strip().splitlines()) <= (9 if text.startswith("error: nothing fits") else 3), text[:2000]
    assert "Traceback" not in text and "internal error" not in text
    assert all(len(line) < 400 for line in text.splitlines())


def test_counts_recorded():
    # Runs after the two properties in file order: both tried their full example counts.
    if TRIED["plan.yml mutations"]:
        assert TRIED["plan.yml mutations"] >= PLAN_EXAMPLES // 2
    if TRIED["cli argument sets"]:
        assert TRIED["cli argument sets"] >= CLI_EXAMPLES // 2


