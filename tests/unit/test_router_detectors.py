"""The router's detectors and its decision: model-free Presidio, air-gapped, every role, fail closed."""
from __future__ import annotations

import asyncio
import json
import socket

import pytest

pytest.importorskip("presidio_analyzer", reason="router extra not installed: pip install -e '.[router]'")
pytest.importorskip("fastapi", reason="router extra not installed: pip install -e '.[router]'")

from router.decide import Router
from router.detectors import build_detectors
from router.normalize import normalize
from router.policy import KNOWN_IDENTIFIERS
from router.scan import Document, extract, run_detectors
from tests.unit.router_fixtures import CARD, IBAN, NHS, SSN, make_policy


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return make_policy(tmp_path_factory.mktemp("pol"))


@pytest.fixture(scope="module")
def detectors(policy):
    return build_detectors(policy)


def kinds(detectors, text: str) -> set[str]:
    n = normalize(text).text
    return {f.kind for d in detectors for f in d.detect(n)}


@pytest.mark.parametrize("text, kind", [
    (f"my card is {CARD} thanks", "CREDIT_CARD"),
    (f"iban {IBAN}", "IBAN_CODE"),
    (f"nhs number {NHS}", "UK_NHS"),
    (f"ssn {SSN}", "US_SSN"),
    ("status of bluebird please", "CODE_NAME"),
    ("PROJECT-NIGHTJAR kickoff", "CODE_NAME"),
    ("pull rows from the hr-records table", "DATA_SOURCE"),
    ("CONFIDENTIAL: q3 numbers", "MARKING"),
    ("TOP  SECRET\ndoc", "MARKING"),
    ("see ticket ACME-123456", "PATTERN:ticket"),
    ("Ｂｌｕｅｂｉｒｄ status", "CODE_NAME"),            # fullwidth letters
    ("Blue\u200bbird status", "CODE_NAME"),              # zero-width space
    ("СONFIDENTIAL", "MARKING"),                          # Cyrillic С
])
def test_detects(detectors, text, kind):
    assert kind in kinds(detectors, text)


@pytest.mark.parametrize("text", [
    "4539 1488 0343 6468 is not a card (Luhn fails)",
    "GB83 WEST 1234 5698 7654 32 fails mod-97",
    "keep this confidential between us",            # prose, not a marking
    "the bluebirds are singing",                    # not the whole word
    "SECRETARY of state",
    "temperatures 12.5 13.7 45.2 61.8 33.1 20.9 11.4 18.2",
    "version 2024-01-15 10.30.22",
])
def test_clean(detectors, text):
    assert kinds(detectors, text) == set()


def test_every_occurrence_is_found(detectors):
    doc = Document.build(extract({"messages": [{"role": "user", "content": f"a {CARD} b {CARD} c 4111-1111-1111-1111"}]}).segments)
    found = [loc for loc in run_detectors(detectors, doc)]
    assert [loc.finding.kind for loc in found] == ["CREDIT_CARD"] * 3
    assert len({(loc.start, loc.end) for loc in found}) == 3


def test_presidio_runs_without_a_model_or_a_socket(policy, monkeypatch):
    """Model-free engine, and no network: any connect/resolve during build + analysis fails the test."""
    def boom(*a, **k):
        raise AssertionError("a socket was used during detection")
    monkeypatch.setattr(socket.socket, "connect", boom)
    monkeypatch.setattr(socket.socket, "connect_ex", boom)
    monkeypatch.setattr(socket, "create_connection", boom)
    monkeypatch.setattr(socket, "getaddrinfo", boom)
    # every identifier type the policy accepts, incl. EMAIL_ADDRESS (tldextract) — built and run offline
    p = policy.model_copy(update={"detect": policy.detect.model_copy(update={"identifiers": list(KNOWN_IDENTIFIERS)})})
    dets = build_detectors(p)
    engine = dets[0].engine
    assert type(engine.nlp_engine).__name__ == "NoOpNlpEngine"
    assert not any("Spacy" in type(r).__name__ for r in engine.registry.recognizers)
    # the email recognizer calls tldextract, whose default would fetch the public suffix list
    got = kinds(dets, f"mail jane.doe@example.co.uk or bob@corp.example.com, card {CARD}")
    assert {"EMAIL_ADDRESS", "CREDIT_CARD"} <= got


def test_scan_covers_every_role_and_tool_arguments():
    body = {"model": "frontier", "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": json.dumps({"q": "\u0034"}, ensure_ascii=True)}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "result"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "desc"}}]}
    ex = extract(body)
    texts = [s.text for s in ex.segments]
    for t in ("sys", "hello", "result", "desc", "lookup"):
        assert t in texts
    assert not ex.unscannable and "frontier" not in texts
    body["messages"][1]["content"].append({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})
    assert extract(body).unscannable == ["messages[1].content[1]: content part of type 'image_url'"]
    assert extract({"model": "m", "prompt": [1, 2, 3]}).unscannable == ["prompt: token ids"]


def test_escaped_tool_arguments_are_decoded(detectors):
    args = json.dumps({"card": CARD.replace("4", "\u0664")}, ensure_ascii=True)  # \u0664: Arabic-Indic four
    assert "\\u" in args
    doc = Document.build(extract({"messages": [{"role": "assistant", "tool_calls": [
        {"function": {"name": "pay", "arguments": args}}]}]}).segments)
    assert any(f.kind == "CREDIT_CARD" for d in detectors for f in d.detect(doc.text))


# ---- the decision -------------------------------------------------------------------------------

def decide(router, body, caller="research", source=None, endpoint="chat"):
    return asyncio.run(router.decide(endpoint, body, caller, source))


def chat(text, model="frontier", **extra):
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture()
def router(tmp_path, detectors):
    return Router(make_policy(tmp_path), "site-secret", detectors)


def test_clean_frontier_goes_out(router):
    d = decide(router, chat("What is the capital of France?"))
    assert (d.route, d.upstream_model, d.reasons) == ("remote", "outside-model", ["alias"])
    assert d.body["model"] == "outside-model" and d.findings == {}


@pytest.mark.parametrize("text, reason", [
    (f"charge {CARD}", "content:CREDIT_CARD"),
    ("how is Bluebird going", "content:CODE_NAME"),
    ("INTERNAL ONLY: roadmap", "content:MARKING"),
])
def test_sensitive_stays_local(router, text, reason):
    d = decide(router, chat(text))
    assert d.route == "local" and reason in d.reasons and d.upstream_model == "local-model"
    assert d.body["model"] == "local-model"


def test_callers_and_sources(router):
    assert decide(router, chat("hi"), caller="legal").reasons == ["caller_local_only"]
    assert decide(router, chat("hi"), caller="intern").reasons == ["caller_not_allowed_remote"]
    assert decide(router, chat("hi"), source="patients db").reasons == ["data_source_local_only"]
    assert decide(router, chat("hi again"), source="public-web").route == "remote"  # "hi" is flagged now
    assert decide(router, chat("hello", model="local-model")).reasons == ["local_model"]


def test_identifier_split_across_messages_and_tool_result(router):
    body = {"model": "frontier", "messages": [
        {"role": "user", "content": "first half 4539 1488"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t", "type": "function",
                                                                 "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t", "content": "0343 6467 second half"}]}
    d = decide(router, body)
    assert d.route == "local" and "content:CREDIT_CARD" in d.reasons


def test_tool_call_arguments_and_system_prompt_are_gated(router):
    body = {"model": "frontier", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "pay it"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t", "type": "function",
            "function": {"name": "pay", "arguments": json.dumps({"iban": IBAN})}}]}]}
    assert decide(router, body).route == "local"
    body2 = {"model": "frontier", "messages": [{"role": "system", "content": "Context: Project Nightjar"},
                                               {"role": "user", "content": "summarise"}]}
    assert decide(router, body2).route == "local"


def test_a_flagged_conversation_stays_local(router):
    first = {"model": "frontier", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"},
                                               {"role": "assistant", "content": "hello"},
                                               {"role": "user", "content": f"card {CARD}"}]}
    assert decide(router, first).route == "local"
    later = {"model": "frontier", "messages": first["messages"][:3] + [{"role": "user", "content": "and now?"}]}
    d = decide(router, later)
    assert d.route == "local" and d.reasons == ["conversation_flagged"]
    assert decide(router, chat("a new conversation")).route == "remote"
    # the store holds HMACs only
    assert all(len(k) == 64 and "hi" not in k for k in router.flags.keys)


def test_flag_store_persists_and_is_bounded(tmp_path, detectors):
    p = make_policy(tmp_path, conversations={"max_entries": 2, "store_file": str(tmp_path / "flags")})
    r = Router(p, "site-secret", detectors)
    for i in range(3):
        decide(r, chat(f"conv {i} {CARD}"))
    assert len(r.flags.keys) == 2
    r2 = Router(p, "site-secret", detectors)
    assert decide(r2, chat(f"conv 2 {CARD}".replace(CARD, CARD))).route == "local"
    assert CARD not in (tmp_path / "flags").read_text()


def test_unscannable_content_stays_local(router):
    body = {"model": "frontier", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}
    d = decide(router, body)
    assert d.route == "local" and d.reasons == ["unscannable"]


@pytest.mark.parametrize("mode, reason", [("error", "detector_error:DetectorFault"), ("timeout", "detector_timeout")])
def test_detector_failure_never_goes_out(tmp_path, mode, reason):
    p = make_policy(tmp_path, detect={"plugins": [{"name": "fault_injection", "options": {"mode": mode, "sleep_s": 1.0}}],
                                      "timeout_s": 0.3})
    d = decide(Router(p, "s"), chat("perfectly clean"))
    assert d.route == "local" and reason in d.reasons
    p2 = make_policy(tmp_path, on_detector_error="refuse",
                     detect={"plugins": [{"name": "fault_injection", "options": {"mode": mode, "sleep_s": 1.0}}], "timeout_s": 0.3})
    d2 = decide(Router(p2, "s"), chat("perfectly clean"))
    assert d2.route == "refused" and d2.status == 503


def test_difficulty_rule(tmp_path, detectors):
    r = Router(make_policy(tmp_path, difficulty={"min_chars": 200}), "s", detectors)
    easy = decide(r, chat("hi there", model="auto"))
    assert (easy.route, easy.reasons, easy.upstream_model) == ("local", ["auto_easy"], "local-model")
    hard = decide(r, chat("Please prove this theorem step by step", model="auto"))
    assert (hard.route, hard.reasons, hard.upstream_model) == ("remote", ["auto_hard"], "outside-model")
    assert decide(r, chat("x " * 150, model="auto")).route == "remote"
    assert decide(r, chat(f"prove the theorem about {CARD}", model="auto")).route == "local"


def test_redaction_mode(tmp_path, detectors):
    r = Router(make_policy(tmp_path, redaction={"enabled": True}), "s", detectors)
    d = decide(r, chat(f"Refund card {CARD} and card {CARD}; IBAN {IBAN}."))
    assert d.route == "remote" and d.redacted == {"CREDIT_CARD": 2, "IBAN_CODE": 1}
    sent = d.body["messages"][0]["content"]
    assert sent == "Refund card <CREDIT_CARD_1> and card <CREDIT_CARD_1>; IBAN <IBAN_CODE_1>."
    assert d.restore == {"<CREDIT_CARD_1>": CARD, "<IBAN_CODE_1>": IBAN}
    # markings and code names are never redacted
    assert decide(r, chat(f"CONFIDENTIAL card {CARD}")).route == "local"
    # off by default
    assert decide(Router(make_policy(tmp_path), "s", detectors), chat(f"card {CARD}")).route == "local"


def test_redaction_restores_a_split_stream():
    from router.redact import StreamRestorer, restore_json
    m = {"<CREDIT_CARD_1>": CARD}
    assert restore_json({"choices": [{"message": {"content": "ok <CREDIT_CARD_1>."}}]}, m) == \
        {"choices": [{"message": {"content": f"ok {CARD}."}}]}
    sr = StreamRestorer(m)
    def ev(text, fin=None):
        return ("data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": fin}]}) + "\n\n").encode()
    raw = ev("card <CRED") + ev("IT_CARD_1> done") + ev("", "stop") + b"data: [DONE]\n\n"
    out = b"".join(sr.feed(raw[i:i + 7]) for i in range(0, len(raw), 7)) + sr.close()
    text = "".join(json.loads(line[6:])["choices"][0]["delta"]["content"] or ""
                   for line in out.decode().split("\n\n") if line.startswith("data: {"))
    assert text == f"card {CARD} done" and out.endswith(b"data: [DONE]\n\n")


def test_prompt_hmac_and_audit_record_hold_no_text(router):
    d = decide(router, chat(f"card {CARD} Bluebird"))
    rec = json.dumps(d.audit_record())
    assert "4539" not in rec and "Bluebird" not in rec and len(d.prompt_hmac) == 64
    assert d.audit_record()["findings"] == {"CREDIT_CARD": 1, "CODE_NAME": 1}
