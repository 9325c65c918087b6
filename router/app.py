"""The HTTP service: OpenAI-compatible, in front of the local vLLM and (optionally) a closed API.

Endpoints: POST /v1/chat/completions, POST /v1/completions (both with `stream: true` passed
through as server-sent events), GET /v1/models (the local models + the remote aliases + the
difficulty alias), GET /health (no secret needed; says nothing about traffic).

Trust (see router/README.md): every /v1 request must carry the gateway's shared secret header;
without it the request is refused (401) before anything else, so a client that reaches the router
directly cannot claim a caller label. The caller label comes only from the gateway's header.

Nothing is forwarded from the client's headers: the upstream request carries only Content-Type and
the upstream's own key. The httpx clients ignore proxy environment variables (trust_env=False).
The closed API's key is read once from its root-only file and never logged or echoed.
"""
from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from router.audit import AuditLog
from router.decide import Decision, Router
from router.detectors import Detector
from router.policy import LABEL_RE, Policy, read_secret
from router.redact import StreamRestorer, restore_json

log = logging.getLogger("selfhost.router")
CALLER_RE = LABEL_RE
ROUTE_HEADER = "X-Selfhost-Route"


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def create_app(policy: Policy, *, detectors: list[Detector] | None = None) -> FastAPI:
    gateway_secret = read_secret(policy.gateway.secret_file, what="gateway secret")
    site_secret = read_secret(policy.site_secret_file, what="site secret")
    remote_key = read_secret(policy.remote.api_key_file, what="remote API key") if policy.remote else None
    local_key = read_secret(policy.local.api_key_file, what="local API key") if policy.local.api_key_file else None
    router = Router(policy, site_secret, detectors)
    audit = AuditLog(policy.audit.path)
    clients: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        clients["local"] = httpx.AsyncClient(base_url=policy.local.base_url.rstrip("/") + "/",
                                             timeout=policy.local.timeout_s, trust_env=False)
        if policy.remote is not None:
            clients["remote"] = httpx.AsyncClient(base_url=policy.remote.base_url + "/",
                                                  timeout=policy.remote.timeout_s, trust_env=False)
        seq, head = audit.head()
        log.info("router up: audit %s at seq %d head %s; remote %s", policy.audit.path, seq, head,
                 policy.remote.base_url if policy.remote else "none")
        try:
            yield
        finally:
            for c in clients.values():
                await c.aclose()

    app = FastAPI(title="selfhost router", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.router = router
    app.state.audit = audit

    def _auth(request: Request) -> str | JSONResponse:
        got = request.headers.get(policy.gateway.secret_header, "")
        if not hmac.compare_digest(got.encode(), gateway_secret.encode()):
            return _error(401, "requests must come through the gateway", "unauthorized")
        caller = request.headers.get(policy.gateway.caller_header, "anonymous").strip()
        return caller if CALLER_RE.match(caller) else "invalid-caller-label"

    def _headers(route: str) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        key = remote_key if route == "remote" else local_key
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    async def _handle(request: Request, endpoint: str, path: str) -> Response:
        who = _auth(request)
        if isinstance(who, JSONResponse):
            return who
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object", "invalid_request_error")
        dec = await router.decide(endpoint, body, who, request.headers.get(policy.gateway.data_source_header))
        try:
            audit.append(dec.audit_record())
        except OSError:
            log.exception("audit append failed; refusing the request")
            return _error(503, "the decision could not be audited", "audit_unavailable")
        if dec.route == "refused":
            return _error(dec.status, dec.message,
                          "permission_error" if dec.status == 403 else "policy_refused")
        return await _forward(dec, path)

    async def _forward(dec: Decision, path: str) -> Response:
        client = clients[dec.route]
        headers = {ROUTE_HEADER: dec.route}
        req = client.build_request("POST", path, json=dec.body, headers=_headers(dec.route))
        try:
            resp = await client.send(req, stream=dec.stream)
        except httpx.HTTPError as e:
            log.warning("%s upstream unreachable: %s", dec.route, type(e).__name__)
            return JSONResponse({"error": {"message": f"{dec.route} upstream unavailable", "type": "upstream_error",
                                           "code": 502}}, status_code=502, headers=headers)
        ctype = resp.headers.get("content-type", "application/json")
        if dec.stream:
            if dec.restore:
                restorer = StreamRestorer(dec.restore)

                async def gen() -> AsyncIterator[bytes]:
                    async for chunk in resp.aiter_raw():
                        out = restorer.feed(chunk)
                        if out:
                            yield out
                    tail = restorer.close()
                    if tail:
                        yield tail
                stream = gen()
            else:
                stream = resp.aiter_raw()
            return StreamingResponse(stream, status_code=resp.status_code, media_type=ctype,
                                     headers=headers, background=BackgroundTask(resp.aclose))
        content = resp.content
        if dec.restore and resp.status_code == 200:
            try:
                content = json.dumps(restore_json(json.loads(content), dec.restore)).encode()
            except ValueError:
                pass
        return Response(content, status_code=resp.status_code, media_type=ctype, headers=headers)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await _handle(request, "chat", "chat/completions")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _handle(request, "completions", "completions")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        who = _auth(request)
        if isinstance(who, JSONResponse):
            return who
        data: list[dict[str, Any]] = []
        try:
            r = await clients["local"].get("models", headers=_headers("local"))
            if r.status_code == 200:
                data = list(r.json().get("data", []))
        except (httpx.HTTPError, ValueError):
            log.warning("local /models unavailable")
        if not data:
            data = [{"id": policy.local.default_model, "object": "model", "owned_by": "selfhost"}]
        for alias in (policy.remote.aliases if policy.remote else {}):
            data.append({"id": alias, "object": "model", "created": 0, "owned_by": "selfhost-router:remote"})
        data.append({"id": policy.difficulty.alias, "object": "model", "created": 0, "owned_by": "selfhost-router:auto"})
        # Only what this caller may ask for (callers.models): the rest would answer 403.
        data = [m for m in data if policy.callers.may_use(who, str(m.get("id")))]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/health")
    async def health() -> Response:
        return JSONResponse({"status": "ok"})

    return app
