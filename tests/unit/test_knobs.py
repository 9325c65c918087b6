"""The vLLM engine knobs are declared once (vllm_args.KNOBS); every other place that names them agrees."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import typer

from toolkit.plan.planner import PlanRequest
from toolkit.plan.vllm_args import KNOBS, KV_CACHE_DTYPES, VllmServeArgs
from toolkit.sizing.estimate import Settings


def _defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def test_plan_request_and_settings_carry_each_knob_with_its_default():
    for cls in (PlanRequest, Settings):
        defaults = _defaults(cls)
        for knob in KNOBS.values():
            assert defaults[knob.name] == knob.default, (cls.__name__, knob.name)


def test_serve_args_have_each_knob_and_the_kv_dtypes():
    for knob in KNOBS.values():
        assert knob.name in VllmServeArgs.model_fields, knob.name
    assert typing.get_args(VllmServeArgs.model_fields["kv_cache_dtype"].annotation) == KV_CACHE_DTYPES


def test_plan_cli_takes_flag_help_and_default_from_the_table():
    from toolkit.commands import plan

    app = typer.Typer()
    plan.register(app) if hasattr(plan, "register") else app.command("plan")(plan.plan)
    app.command("noop", hidden=True)(lambda: None)
    command = typer.main.get_command(app).commands["plan"]
    params = {p.name: p for p in command.params}
    for knob in KNOBS.values():
        p = params[knob.name]
        assert knob.flag in p.opts and p.help == knob.help and p.default == knob.default, knob.name
    out = subprocess.run([sys.executable, "-m", "toolkit", "plan", "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "300", "PATH": ""}).stdout
    assert all(k.flag in out for k in KNOBS.values())
