"""Per-caller model allow-lists (`callers.models`): policy validation, the decision, the HTTP surface, render."""
from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("presidio_analyzer", reason="router extra not installed: pip install -e '.[router]'")
pytest.importorskip("fastapi", reason="router extra not installed: pip install -e '.[router]'")
from fastapi.testclient import TestClient

from router.app import create_app
from router.audit import verify
from router.decide import Router
from router.policy import PolicyError
from tests.unit.router_fixtures import make_policy

MODELS = {"team-a": ["local-model", "frontier"], "legal": ["frontier", "adapter-x"], "*": ["local-model"]}
GW = {"X-Selfhost-Gateway-Secret": "gw-secret"}


def chat(model: str | None, text: str = "write a haiku") -> dict:
    return {**({"model": model} if model is not None else {}), "messages": [{"role": "user", "content": text}]}


def decide(router: Router, body: dict, caller: str):
    return asyncio.run(router.decide("chat", body, caller, None))


def test_the_allow_list_shape_is_validated(tmp_path):
    assert make_policy(tmp_path).callers.models is None, "no allow-list: anyone may ask for anything"
    p = make_policy(tmp_path, callers={"models": MODELS})
    assert p.callers.may_use("team-a", "frontier") and not p.callers.may_use("team-a", "adapter-x")
    assert p.callers.may_use("someone", "local-model") and not p.callers.may_use("someone", "frontier")
    assert make_policy(tmp_path, callers={"models": {"ops": ["*"]}}).callers.may_use("ops", "anything")
    assert not make_policy(tmp_path, callers={"models": {"ops": ["*"]}}).callers.may_use("other", "local-model")
    for bad, needle in [({"models": {"bad label": ["x"]}}, "caller label"), ({"models": {"a": "x"}}, "list"),
                        ({"models": {"a": [""]}}, "empty model name"), ({"models": ["a"]}, "dict"),
                        ({"local_only": ["no spaces"]}, "caller label")]:
        with pytest.raises(PolicyError, match=needle):
            make_policy(tmp_path, callers=bad)


def test_a_model_off_the_list_is_refused_before_routing(tmp_path):
    r = Router(make_policy(tmp_path, callers={"models": MODELS, "local_only": ["legal"],
                                              "remote_allowed": ["*"]}), "s")
    d = decide(r, chat("adapter-x"), "team-a")
    assert (d.route, d.status, d.reasons) == ("refused", 403, ["model_not_allowed"])
    assert "team-a" in d.message and "adapter-x" in d.message
    assert decide(r, chat("frontier"), "team-a").route == "remote"
    d = decide(r, chat("frontier"), "legal")
    assert (d.route, d.reasons) == ("local", ["caller_local_only"]), "allowed to ask; local_only still keeps it local"
    assert decide(r, chat("frontier"), "someone").status == 403, "'*' covers the unlisted callers"
    assert decide(r, chat(None), "someone").route == "local", "no model: the local default, which '*' allows"
    assert decide(r, chat(None), "legal").status == 403


def test_the_http_surface_refuses_lists_and_audits_per_caller(tmp_path):
    p = make_policy(tmp_path, callers={"models": MODELS, "local_only": ["legal"], "remote_allowed": ["*"]})
    with TestClient(create_app(p)) as c:
        r = c.post("/v1/chat/completions", headers={**GW, "X-Selfhost-Caller": "team-a"}, json=chat("adapter-x"))
        assert r.status_code == 403
        err = r.json()["error"]
        assert err["type"] == "permission_error" and err["code"] == 403 and "adapter-x" in err["message"]
        seen = {who: [m["id"] for m in c.get("/v1/models", headers={**GW, "X-Selfhost-Caller": who}).json()["data"]]
                for who in ("team-a", "legal", "someone")}
        r = c.post("/v1/chat/completions", headers={**GW, "X-Selfhost-Caller": "legal"}, json=chat("frontier"))
        assert r.status_code == 502 and r.headers["X-Selfhost-Route"] == "local", "no local upstream here: 502, local"
    assert seen == {"team-a": ["local-model", "frontier"], "legal": ["frontier"], "someone": ["local-model"]}
    rep = verify(tmp_path / "audit.jsonl")
    assert rep.ok and rep.routes == {"refused": 1, "local": 1}
    import json
    recs = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(x["caller"], x["route"], x["reasons"]) for x in recs] == [
        ("team-a", "refused", ["model_not_allowed"]), ("legal", "local", ["caller_local_only"])]
