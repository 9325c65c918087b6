"""`selfhost route audit`: a real chain written by router.audit.AuditLog verifies (exit 0, summary printed);
a copy with one edited line is reported broken (exit 1). The toolkit imports nothing of the router but
router.audit (stdlib-only)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from typer.testing import CliRunner

from router.audit import AuditLog
from toolkit.cli import _register, app

ROOT = Path(__file__).resolve().parents[2]


def _log(path: Path) -> Path:
    log = AuditLog(path)
    log.append({"caller": "team-a", "route": "local", "findings": {"CREDIT_CARD": 1}, "prompt_hmac": "ab" * 16})
    log.append({"caller": "team-b", "route": "remote", "findings": {}, "prompt_hmac": "cd" * 16})
    log.append({"caller": "team-b", "route": "local", "findings": {}, "prompt_hmac": "ef" * 16})
    return path


def _invoke(*args):
    _register()
    return CliRunner().invoke(app, ["route", "audit", *args])


def test_intact_chain_verifies_and_summarises(tmp_path):
    path = _log(tmp_path / "audit.jsonl")
    res = _invoke("--log", str(path))
    assert res.exit_code == 0, res.output
    assert "chain intact (3 records)" in res.output
    assert "0 requests with a detected identifier went out" in res.output
    res = _invoke("--log", str(path), "--json", "--days", "7")
    assert res.exit_code == 0
    rep = json.loads(res.output)["reports"][str(path)]
    assert rep["ok"] and rep["records"] == 3 and rep["routes"] == {"local": 2, "remote": 1} and rep["days"] == 7


def test_tampered_copy_breaks_the_chain_exit_1(tmp_path):
    path = _log(tmp_path / "audit.jsonl")
    lines = path.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["route"] = "local"  # hide that a request went out
    lines[1] = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    res = _invoke("--log", str(tampered))
    assert res.exit_code == 1
    assert "BROKEN at line 2" in res.output
    dropped = tmp_path / "dropped.jsonl"
    dropped.write_text("\n".join([path.read_text().splitlines()[0], path.read_text().splitlines()[2]]) + "\n")
    assert _invoke("--log", str(dropped)).exit_code == 1


def test_missing_log_and_no_source_are_refused(tmp_path):
    assert _invoke("--log", str(tmp_path / "nope.jsonl")).exit_code == 1
    assert _invoke().exit_code == 1


ROUTER_LIGHT = {"router.audit", "router.policy"}  # stdlib / pydantic + YAML only: the toolkit's own dependencies


def test_toolkit_imports_only_router_audit():
    """...and router.policy (render validates a site's policy with the router's own schema)."""
    bad = []
    for f in (ROOT / "toolkit").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{f.relative_to(ROOT)}: {n}" for n in names
                    if (n == "router" or n.startswith("router.")) and n not in ROUTER_LIGHT]
    assert not bad


def test_the_router_modules_the_toolkit_imports_need_no_router_extra():
    allowed = {"pydantic", "yaml"}
    for mod in ROUTER_LIGHT:
        tree = ast.parse((ROOT / (mod.replace(".", "/") + ".py")).read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for n in names:
                top = n.split(".")[0]
                assert top in allowed or top == "__future__" or top in __import__("sys").stdlib_module_names, (mod, n)
