"""`selfhost models` / `selfhost gpus` through the real entry point (`python -m toolkit`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_gpus_json():
    proc = _run("gpus", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert len(data) >= 20
    assert {"H100-SXM", "A100-80GB-SXM", "T4", "MI300X"} <= {g["name"] for g in data}


def test_models_json_and_family_filter():
    proc = _run("models", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data and all("id" in m and "license" in m for m in data)
    family = data[0]["family"]
    proc = _run("models", "--json", "--family", family.upper())
    assert proc.returncode == 0, proc.stderr
    assert {m["family"] for m in json.loads(proc.stdout)} == {family}


@pytest.mark.parametrize("args", [["gpus"], ["models"]])
def test_tables(args):
    proc = _run(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_unknown_family_is_an_error_not_a_traceback():
    proc = _run("models", "--family", "no-such-family")
    assert proc.returncode == 1
    assert "no models in family" in proc.stderr and "Traceback" not in proc.stderr
