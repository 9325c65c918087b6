"""The router live, against real servers, no mocks: nothing with an identifier reaches the "outside".

One real vLLM CPU server (fixture `vllm_server`, the tiny model) stands for both upstreams; two tiny
logging reverse proxies in front of it play "local vLLM" and "closed API": each records every body it
receives, and the outside one also demands the remote key. The router runs in uvicorn on 127.0.0.1
(two instances: the normal policy, and one whose detector is made to fail). While this module runs,
any socket connect to a non-loopback address raises: the whole exchange is loopback-only.
"""
from __future__ import annotations

import http.client
import json
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("presidio_analyzer", reason="router extra not installed: pip install -e '.[router]'")
import httpx
import uvicorn

from router.app import create_app
from router.audit import verify
from router.policy import load_policy
from tests.integration.conftest import _free_port
from tests.unit.router_fixtures import CARD, IBAN, write_policy

pytestmark = pytest.mark.integration

GW = {"X-Selfhost-Gateway-Secret": "gw-secret", "X-Selfhost-Caller": "research"}
REMOTE_KEY = "sk-remote-TESTKEY"
CARD_DIGITS = CARD.replace(" ", "")


# ---- loopback only -------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def loopback_only():
    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"non-loopback connect attempted: {address}")
        return real(self, address)
    socket.socket.connect = connect
    yield
    socket.socket.connect = real


# ---- logging reverse proxies ---------------------------------------------------------------------

class LoggingProxy:
    """Forwards POST/GET to the upstream, recording each request body; optionally demands a bearer key."""

    def __init__(self, upstream: str, name: str, require_key: str | None = None):
        self.upstream = urlsplit(upstream)
        self.name = name
        self.require_key = require_key
        self.bodies: list[str] = []
        self.auth_seen: list[str | None] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.bodies.append(body.decode("utf-8", "replace"))
                auth = self.headers.get("Authorization")
                proxy.auth_seen.append(auth)
                if proxy.require_key and auth != f"Bearer {proxy.require_key}":
                    self.send_response(401)
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=300)
                conn.request(method, self.path, body=body or None, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.getheader("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Served-By", proxy.name)
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def do_POST(self):
                self._forward("POST")

            def do_GET(self):
                self._forward("GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def saw(self, needle: str) -> bool:
        return any(needle in b for b in self.bodies)

    def close(self) -> None:
        self.server.shutdown()


class RouterServer:
    def __init__(self, policy_path: Path):
        self.port = _free_port()
        app = create_app(load_policy(policy_path))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                   access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "router did not start"
            time.sleep(0.05)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def model_id(vllm_server) -> str:
    return httpx.get(f"{vllm_server}/v1/models", timeout=30).json()["data"][0]["id"]


@pytest.fixture(scope="module")
def stack(vllm_server, model_id, tmp_path_factory):
    local = LoggingProxy(vllm_server, "local")
    outside = LoggingProxy(vllm_server, "outside", require_key=REMOTE_KEY)
    tmp = tmp_path_factory.mktemp("router-live")
    common = {"local": {"base_url": local.url, "default_model": model_id},
              "remote": {"base_url": outside.url, "aliases": {"frontier": model_id}}}
    normal = RouterServer(write_policy(tmp, **common))
    ftmp = tmp / "fault"
    ftmp.mkdir()
    failing = RouterServer(write_policy(ftmp, **common, detect={"plugins": [{"name": "fault_injection"}]}))
    rtmp = tmp / "refuse"
    rtmp.mkdir()
    refusing = RouterServer(write_policy(rtmp, **common, on_detector_error="refuse",
                                         detect={"plugins": [{"name": "fault_injection",
                                                              "options": {"mode": "timeout", "sleep_s": 5}}],
                                                 "timeout_s": 0.5}))
    dtmp = tmp / "redact"
    dtmp.mkdir()
    redacting = RouterServer(write_policy(dtmp, **common, redaction={"enabled": True}))
    yield {"local": local, "outside": outside, "router": normal.url, "failing": failing.url,
           "refusing": refusing.url, "redacting": redacting.url, "audit": tmp / "audit.jsonl",
           "fault_audit": ftmp / "audit.jsonl", "redact_audit": dtmp / "audit.jsonl"}
    for s in (normal, failing, refusing, redacting):
        s.close()
    local.close()
    outside.close()


def chat(base: str, messages, model="frontier", stream=False, headers=GW, **extra) -> httpx.Response:
    body = {"model": model, "messages": messages, "max_tokens": 8, "temperature": 0, "stream": stream, **extra}
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=300)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assert_answer(resp: httpx.Response, route: str) -> dict:
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Selfhost-Route"] == route
    data = resp.json()
    assert data["choices"][0]["message"]["content"] is not None
    return data


def _never_outside(stack, *needles: str) -> None:
    for n in needles:
        assert not stack["outside"].saw(n), f"{n!r} reached the outside server"


def test_requests_need_the_gateway_secret(stack):
    assert chat(stack["router"], user("hi"), headers={}).status_code == 401
    bad = {**GW, "X-Selfhost-Gateway-Secret": "guess"}
    assert chat(stack["router"], user("hi"), headers=bad).status_code == 401
    assert httpx.get(f"{stack['router']}/health").status_code == 200


def test_models_lists_local_and_aliases(stack, model_id):
    ids = [m["id"] for m in httpx.get(f"{stack['router']}/v1/models", headers=GW, timeout=30).json()["data"]]
    assert model_id in ids and "frontier" in ids and "auto" in ids


def test_clean_prompt_to_frontier_is_answered_outside(stack):
    n = len(stack["outside"].bodies)
    _assert_answer(chat(stack["router"], user("What colour is the sky on a clear day?")), "remote")
    assert stack["outside"].saw("What colour is the sky") and len(stack["outside"].bodies) == n + 1
    assert stack["outside"].auth_seen[-1] == f"Bearer {REMOTE_KEY}"
    assert stack["local"].auth_seen.count(f"Bearer {REMOTE_KEY}") == 0  # the key goes only to the API


@pytest.mark.parametrize("text, needles", [
    (f"Please refund card {CARD} today", [CARD, CARD_DIGITS, "refund card"]),
    ("Status update on Project Nightjar please", ["Nightjar", "Status update on"]),
    ("TOP SECRET: the launch date moves", ["launch date moves"]),
    (f"Pay IBAN {IBAN.lower()} now", [IBAN.lower(), "Pay IBAN"]),
])
def test_sensitive_prompts_are_answered_locally(stack, text, needles):
    _assert_answer(chat(stack["router"], user(text)), "local")
    assert stack["local"].saw(needles[-1])
    _never_outside(stack, *needles)


def test_streaming_behaves_the_same(stack):
    def stream(text):
        with httpx.stream("POST", f"{stack['router']}/v1/chat/completions", headers=GW, timeout=300,
                          json={"model": "frontier", "messages": user(text), "max_tokens": 8, "stream": True}) as r:
            assert r.status_code == 200
            route = r.headers["X-Selfhost-Route"]
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and len(events) >= 2
        assert all("choices" in json.loads(e[6:]) for e in events[:-1])
        return route
    assert stream(f"stream this card {CARD} back") == "local"
    _never_outside(stack, CARD, "stream this card")
    assert stream("stream a haiku about rivers") == "remote"
    assert stack["outside"].saw("haiku about rivers")


def test_a_tool_result_with_an_identifier_stays_local(stack):
    messages = [
        {"role": "user", "content": "Look up the customer's payment method"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
                                                             "function": {"name": "lookup", "arguments": "{\"id\": 7}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": f"card on file: {CARD}"},
    ]
    _assert_answer(chat(stack["router"], messages), "local")
    _never_outside(stack, CARD, "card on file", "payment method")
    # the conversation is now flagged: its next turn stays local even without the identifier
    follow = messages[:1] + [{"role": "assistant", "content": "done"}, {"role": "user", "content": "thanks, and?"}]
    _assert_answer(chat(stack["router"], follow), "local")
    _never_outside(stack, "thanks, and?")


def test_an_identifier_split_across_messages_stays_local(stack):
    messages = [{"role": "user", "content": "my card is 4539 14"},
                {"role": "user", "content": "88 0343 6467, thanks"}]
    _assert_answer(chat(stack["router"], messages), "local")
    _never_outside(stack, "my card is 4539")


def test_completions_endpoint(stack, model_id):
    r = httpx.post(f"{stack['router']}/v1/completions", headers=GW, timeout=300,
                   json={"model": "frontier", "prompt": f"card {CARD} is", "max_tokens": 4})
    assert r.status_code == 200 and r.headers["X-Selfhost-Route"] == "local" and r.json()["choices"][0]["text"] is not None
    _never_outside(stack, CARD)
    r = httpx.post(f"{stack['router']}/v1/completions", headers=GW, timeout=300,
                   json={"model": "frontier", "prompt": "Once upon a time", "max_tokens": 4})
    assert r.status_code == 200 and r.headers["X-Selfhost-Route"] == "remote"


def test_when_the_detector_fails_nothing_goes_out(stack):
    n = len(stack["outside"].bodies)
    _assert_answer(chat(stack["failing"], user("a perfectly clean question about clouds")), "local")
    r = chat(stack["refusing"], user("another clean question about rain"))
    assert r.status_code == 503 and r.json()["error"]["type"] == "policy_refused"
    assert len(stack["outside"].bodies) == n
    _never_outside(stack, "clean question about")
    rep = verify(stack["fault_audit"])
    assert rep.ok and rep.routes == {"local": 1}


def test_redaction_mode_sends_placeholders_only(stack):
    _assert_answer(chat(stack["redacting"], user(f"Summarise the dispute on card {CARD} briefly")), "remote")
    assert stack["outside"].saw("dispute on card <CREDIT_CARD_1> briefly")
    _never_outside(stack, CARD, CARD_DIGITS)
    with httpx.stream("POST", f"{stack['redacting']}/v1/chat/completions", headers=GW, timeout=300,
                      json={"model": "frontier", "messages": user(f"Stream about IBAN {IBAN} please"),
                            "max_tokens": 8, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["X-Selfhost-Route"] == "remote"
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert stack["outside"].saw("Stream about IBAN <IBAN_CODE_1> please")
    _never_outside(stack, IBAN, IBAN.replace(" ", ""))
    # a marking is never redacted: it stays local
    _assert_answer(chat(stack["redacting"], user(f"CONFIDENTIAL card {CARD}")), "local")
    rep = verify(stack["redact_audit"])
    assert rep.ok and rep.leaked == 0 and rep.redacted_out == 2, rep


def test_the_audit_chain_verifies_and_breaks_when_edited(stack, tmp_path):
    rep = verify(stack["audit"])
    assert rep.ok and rep.records >= 10 and rep.leaked == 0, rep
    assert rep.routes.get("remote", 0) >= 3 and rep.routes.get("local", 0) >= 6
    text = stack["audit"].read_text()
    assert CARD not in text and CARD_DIGITS not in text and "Nightjar" not in text and "refund" not in text
    print(f"\nAUDIT: {rep.summary}")
    copy = tmp_path / "edited.jsonl"
    shutil.copy(stack["audit"], copy)
    lines = copy.read_text().splitlines()
    assert '"caller":"research"' in lines[1]
    lines[1] = lines[1].replace('"caller":"research"', '"caller":"nobody"')
    copy.write_text("\n".join(lines) + "\n")
    broken = verify(copy)
    assert not broken.ok and broken.first_bad_line == 2


def test_nothing_the_outside_received_carries_a_finding(stack, tmp_path):
    """Last: every body the outside server logged, re-scanned by the detectors, is clean."""
    from router.detectors import build_detectors
    from router.scan import Document, extract, run_detectors
    from tests.unit.router_fixtures import make_policy
    dets = build_detectors(make_policy(tmp_path))
    bodies = [json.loads(b) for b in stack["outside"].bodies if b]
    assert len(bodies) >= 5
    for body in bodies:
        found = run_detectors(dets, Document.build(extract(body).segments))
        assert not found, (body, found)
