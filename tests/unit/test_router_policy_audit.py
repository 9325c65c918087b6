"""Router policy validation (strict, one-line errors), secret files, and the hash-chained audit log."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from router.audit import AuditLog, verify
from router.policy import PolicyError, load_policy, parse_policy, read_secret
from tests.unit.router_fixtures import make_policy, policy_dict, secret, write_policy


def test_a_complete_policy_loads(tmp_path):
    p = load_policy(write_policy(tmp_path))
    assert p.remote is not None and p.remote.aliases == {"frontier": "outside-model"}
    assert p.on_detector_error == "local" and p.redaction.enabled is False
    assert p.remote_alias_for_auto() == "frontier"


@pytest.mark.parametrize("over, needle", [
    ({"detect": {"identifers": ["CREDIT_CARD"]}}, "detect.identifers: unknown key"),
    ({"colour": "blue"}, "colour: unknown key"),
    ({"on_detector_error": "remote"}, "on_detector_error:"),
    ({"detect": {"identifiers": ["PASSPORT_OF_MARS"]}}, "unknown identifier type"),
    ({"detect": {"patterns": {"bad": "(unclosed"}}}, "does not compile"),
    ({"remote": {"base_url": "ftp://x"}}, "remote.base_url"),
    ({"difficulty": {"alias": "frontier"}}, "also a remote alias"),
])
def test_bad_policies_fail_with_one_line(tmp_path, over, needle):
    with pytest.raises(PolicyError) as e:
        parse_policy(policy_dict(tmp_path, **over))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_policy_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("local: [unclosed\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(bad)
    bad.write_text("- a list\n")
    with pytest.raises(PolicyError, match="must be a YAML mapping"):
        load_policy(bad)


def test_secret_files_must_be_owner_only(tmp_path):
    f = secret(tmp_path / "k", "sk-123")
    assert read_secret(f, what="key") == "sk-123"
    f.chmod(0o644)
    with pytest.raises(PolicyError, match="readable by group/other") as e:
        read_secret(f, what="key")
    assert "sk-123" not in str(e.value)
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "empty").chmod(0o600)
    with pytest.raises(PolicyError, match="empty"):
        read_secret(tmp_path / "empty", what="key")


def _rec(route="local", findings=None, redacted=None, **kw):
    return {"caller": "c", "endpoint": "chat", "route": route, "findings": findings or {}, "redacted": redacted or {},
            "prompt_hmac": "ab" * 32, **kw}


def test_audit_chain_verifies_and_summarises(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl")
    log.append(_rec("local", {"CREDIT_CARD": 1}))
    log.append(_rec("remote"))
    log.append(_rec("remote", {"CREDIT_CARD": 1}, {"CREDIT_CARD": 1}))
    log.append(_rec("refused"))
    rep = verify(tmp_path / "a.jsonl")
    assert rep.ok and rep.records == 4 and rep.leaked == 0 and rep.redacted_out == 1
    assert rep.routes == {"local": 1, "remote": 2, "refused": 1}
    assert "0 requests with a detected identifier went out" in rep.summary
    assert log.head() == (4, rep.head)


def test_audit_counts_a_leak(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl")
    log.append(_rec("remote", {"IBAN_CODE": 2}, {"IBAN_CODE": 1}))
    rep = verify(tmp_path / "a.jsonl")
    assert rep.ok and rep.leaked == 1 and "1 requests with a detected identifier went out" in rep.summary


@pytest.mark.parametrize("edit", ["route", "delete", "swap", "reseal"])
def test_editing_any_line_breaks_the_chain(tmp_path, edit):
    path = tmp_path / "a.jsonl"
    log = AuditLog(path)
    for i in range(5):
        log.append(_rec("local" if i % 2 else "remote"))
    lines = path.read_text().splitlines()
    rec = json.loads(lines[2])
    if edit == "route":
        rec["route"] = "local"
        lines[2] = json.dumps(rec)
    elif edit == "delete":
        del lines[2]
    elif edit == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    elif edit == "reseal":  # recompute this line's own hash: the next line's prev still breaks
        from router.audit import chain_hash
        rec["caller"] = "someone-else"
        rec["hash"] = chain_hash(rec["prev"], rec)
        lines[2] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    rep = verify(path)
    assert not rep.ok and rep.first_bad_line in (2, 3, 4), rep
    assert "BROKEN" in rep.summary


def test_audit_window(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl")
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(days=40)).isoformat()
    log.append(_rec("remote", {"CREDIT_CARD": 1}, time=old))
    log.append(_rec("local"))
    rep = verify(tmp_path / "a.jsonl", days=30)
    assert rep.ok and rep.records == 2 and rep.window_records == 1 and rep.leaked == 0


def test_audit_missing_file(tmp_path):
    rep = verify(tmp_path / "nope.jsonl")
    assert not rep.ok and "cannot read" in rep.error


def test_make_policy_helper(tmp_path):
    assert make_policy(tmp_path, redaction={"enabled": True}).redaction.enabled


def _imports(path):
    import ast
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0] if node.module.split(".")[0] != "router" else node.module)
    return names


def test_the_cli_never_depends_on_the_router_service():
    """toolkit may import only router.audit (stdlib-only: `selfhost route audit` verifies the chain) and
    router.policy (pydantic + YAML: render validates a site's policy with the router's own schema)."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    bad = []
    for path in (root / "toolkit").rglob("*.py"):
        for name in _imports(path):
            if name in ("fastapi", "uvicorn", "presidio_analyzer", "starlette", "tldextract") or \
                    (name.startswith("router") and name not in ("router.audit", "router.policy")):
                bad.append(f"{path.relative_to(root)} imports {name}")
    assert not bad, bad
    import sys
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    assert _imports(root / "router" / "audit.py") <= stdlib
