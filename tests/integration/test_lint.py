"""Lint the shipped Ansible content: yamllint and ansible-lint (production profile), both clean."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed: the test extra provides it (pip install -e '.[test]')")
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


def _env() -> dict:
    import os

    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1"}


def test_yamllint_playbooks_clean():
    res = subprocess.run([_tool("yamllint"), "-s", "-c", str(ROOT / ".yamllint"), "playbooks/"],
                         cwd=ROOT, capture_output=True, text=True, env=_env())
    assert res.returncode == 0, res.stdout + res.stderr


def test_ansible_lint_production_profile_clean():
    res = subprocess.run([_tool("ansible-lint"), "-c", str(ROOT / ".ansible-lint"), "--profile", "production",
                          "--nocolor", "."], cwd=ROOT / "playbooks", capture_output=True, text=True, env=_env(),
                         timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]


def test_every_role_documents_its_public_vars():
    """geerlingguy convention: every default is listed in meta/argument_specs.yml."""
    import yaml

    roles = sorted((ROOT / "playbooks" / "roles").iterdir())
    assert [r.name for r in roles] == ["selfhost_gateway", "selfhost_images", "selfhost_lock", "selfhost_preflight",
                                       "selfhost_release", "selfhost_router", "selfhost_runtime", "selfhost_verify", "selfhost_vllm",
                                       "selfhost_weights"]
    for role in roles:
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
        assert all(k.startswith(role.name + "_") for k in defaults), role.name
        assert set(defaults) <= set(specs), f"{role.name}: undocumented {set(defaults) - set(specs)}"
        assert (role / "meta" / "main.yml").is_file() and (role / "tasks" / "main.yml").is_file()
