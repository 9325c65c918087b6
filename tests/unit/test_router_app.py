"""The router's HTTP surface without any upstream running (both unreachable): auth, errors, audit."""
from __future__ import annotations

import pytest

pytest.importorskip("presidio_analyzer", reason="router extra not installed: pip install -e '.[router]'")
pytest.importorskip("fastapi", reason="router extra not installed: pip install -e '.[router]'")
from fastapi.testclient import TestClient

from router.app import create_app
from router.audit import verify
from router.policy import PolicyError
from tests.unit.router_fixtures import CARD, make_policy

GW = {"X-Selfhost-Gateway-Secret": "gw-secret", "X-Selfhost-Caller": "research"}


@pytest.fixture()
def client(tmp_path):
    with TestClient(create_app(make_policy(tmp_path))) as c:
        c.audit_path = tmp_path / "audit.jsonl"
        yield c


def test_gateway_secret_and_health(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.post("/v1/chat/completions", json={}).status_code == 401
    assert client.get("/v1/models").status_code == 401
    r = client.post("/v1/chat/completions", json={}, headers={**GW, "X-Selfhost-Gateway-Secret": "gw-secre"})
    assert r.status_code == 401


def test_models_without_a_local_upstream(client):
    ids = [m["id"] for m in client.get("/v1/models", headers=GW).json()["data"]]
    assert ids == ["local-model", "frontier", "auto"]


def test_bad_bodies(client):
    assert client.post("/v1/chat/completions", content=b"{nope", headers=GW).status_code == 400
    assert client.post("/v1/chat/completions", json=[1], headers=GW).status_code == 400


def test_unreachable_upstreams_are_502_and_audited(client):
    r = client.post("/v1/chat/completions", headers=GW,
                    json={"model": "frontier", "messages": [{"role": "user", "content": f"card {CARD}"}]})
    assert r.status_code == 502 and r.headers["X-Selfhost-Route"] == "local"
    assert "TESTKEY" not in r.text
    r = client.post("/v1/completions", headers=GW, json={"model": "frontier", "prompt": "hello"})
    assert r.status_code == 502 and r.headers["X-Selfhost-Route"] == "remote"
    rep = verify(client.audit_path)
    assert rep.ok and rep.routes == {"local": 1, "remote": 1} and rep.leaked == 0
    assert CARD not in client.audit_path.read_text()


def test_refusal_on_detector_error(tmp_path):
    p = make_policy(tmp_path, on_detector_error="refuse", detect={"plugins": [{"name": "fault_injection"}]})
    with TestClient(create_app(p)) as c:
        r = c.post("/v1/chat/completions", headers=GW, json={"model": "frontier", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and r.json()["error"]["type"] == "policy_refused"
    assert verify(tmp_path / "audit.jsonl").routes == {"refused": 1}


def test_unknown_plugin_and_loose_secret_refuse_to_start(tmp_path):
    with pytest.raises(PolicyError, match="no detector named 'ner'"):
        create_app(make_policy(tmp_path, detect={"plugins": [{"name": "ner"}]}))
    p = make_policy(tmp_path)
    p.remote.api_key_file.chmod(0o640)
    with pytest.raises(PolicyError, match="readable by group/other"):
        create_app(p)


def test_main_check(tmp_path, capsys):
    from router.__main__ import main
    from tests.unit.router_fixtures import write_policy
    assert main(["--policy", str(write_policy(tmp_path)), "--check"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("audit: {path: x}\nlocal: {default_model: m}\nfoo: 1\n")
    assert main(["--policy", str(bad), "--check"]) == 2
    assert "policy error" in capsys.readouterr().err
