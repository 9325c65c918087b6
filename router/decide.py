"""The routing decision: the gate first, then what may go out.

Order (0 can only refuse; the first three can only keep a request local, never send it out):
0. What the caller may ask for (`callers.models`): a model not on its list → refused (403).
1. Who and what the request declares: a `local_only` caller, a `local_only` data source, a
   conversation already flagged.
2. What it contains: every scannable string (router.scan) through every detector, with a timeout.
   A detector error or timeout → local (or refused, `on_detector_error: refuse`) — never out.
   Anything unscannable (images, audio, files, token ids) → local.
3. Findings → local, and the conversation is flagged (HMAC key; no text kept) — unless redaction is
   on and every finding is a redactable identifier in a writable place: then the placeholders go out.
4. Only then may it go out: the model is a remote alias (`frontier`), or the difficulty alias
   (`auto`) and the local difficulty rule says hard; and the caller is in `callers.remote_allowed`.
   Anything else is served by the local model.

The difficulty rule (local, no model): an `auto` request is hard when its text is at least
`difficulty.min_chars` characters, or mentions at least `difficulty.min_keywords` of the
`difficulty.keywords` (whole words, case-insensitive). Hard → the remote alias; else local.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.detectors import Detector, build_detectors
from router.normalize import normalize
from router.policy import Policy
from router.redact import redact
from router.scan import Document, Extracted, Located, extract, run_detectors


class FlagStore:
    """Conversation keys (hex HMACs) that must stay local; bounded LRU, optionally persisted."""

    def __init__(self, max_entries: int, path: Path | None = None):
        self.max = max_entries
        self.path = path
        self.keys: OrderedDict[str, None] = OrderedDict()
        if path is not None and path.exists():
            for line in path.read_text().split():
                self._add(line)
            if len(path.read_text().split()) > 2 * self.max:
                path.write_text("".join(k + "\n" for k in self.keys))

    def _add(self, key: str) -> None:
        self.keys[key] = None
        self.keys.move_to_end(key)
        while len(self.keys) > self.max:
            self.keys.popitem(last=False)

    def flag(self, key: str) -> None:
        new = key not in self.keys
        self._add(key)
        if new and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(key + "\n")

    def __contains__(self, key: str) -> bool:
        if key in self.keys:
            self.keys.move_to_end(key)
            return True
        return False


@dataclass
class Decision:
    route: str  # local | remote | refused
    reasons: list[str]
    upstream_model: str | None
    body: dict[str, Any]
    caller: str
    endpoint: str
    model: str | None
    stream: bool
    detectors: dict[str, int] = field(default_factory=dict)
    findings: dict[str, int] = field(default_factory=dict)
    redacted: dict[str, int] = field(default_factory=dict)
    restore: dict[str, str] = field(default_factory=dict)
    prompt_hmac: str = ""
    conversation: str | None = None
    status: int = 200
    message: str = ""

    def audit_record(self) -> dict[str, Any]:
        return {"caller": self.caller, "endpoint": self.endpoint, "model": self.model, "route": self.route,
                "upstream_model": self.upstream_model, "reasons": self.reasons, "detectors": self.detectors,
                "findings": self.findings, "redacted": self.redacted, "prompt_hmac": self.prompt_hmac,
                "conversation": self.conversation, "stream": self.stream}


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Router:
    def __init__(self, policy: Policy, site_secret: str, detectors: list[Detector] | None = None):
        self.policy = policy
        self.secret = site_secret.encode()
        self.detectors = detectors if detectors is not None else build_detectors(policy)
        self.flags = FlagStore(policy.conversations.max_entries, policy.conversations.store_file)
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="detect")
        d = policy.difficulty
        self._kw = [re.compile(r"(?<![^\W_])" + r"\s+".join(map(re.escape, k.split())) + r"(?![^\W_])", re.IGNORECASE)
                    for k in d.keywords]

    # -- keys -------------------------------------------------------------------------------------
    def hmac(self, data: bytes) -> str:
        return hmac.new(self.secret, data, hashlib.sha256).hexdigest()

    def conversation_key(self, endpoint: str, body: dict[str, Any]) -> str | None:
        """HMAC of the system/developer prompts + the first user message: stable over a conversation."""
        if endpoint != "chat":
            return None
        msgs = body.get("messages")
        if not isinstance(msgs, list):
            return None
        system = [m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") in ("system", "developer")]
        first_user = next((m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "user"), None)
        if first_user is None and not system:
            return None
        return self.hmac(b"conversation\n" + _canon([system, first_user]))

    # -- difficulty -------------------------------------------------------------------------------
    def is_hard(self, doc: Document) -> bool:
        text = doc.contents_text  # message text only, not keys, roles or tool schemas
        d = self.policy.difficulty
        if len(text) >= d.min_chars:
            return True
        return sum(1 for rx in self._kw if rx.search(text)) >= d.min_keywords

    # -- the decision -----------------------------------------------------------------------------
    async def decide(self, endpoint: str, body: dict[str, Any], caller: str, data_source: str | None) -> Decision:
        p = self.policy
        model = body.get("model") if isinstance(body.get("model"), str) else None
        dec = Decision(route="local", reasons=[], upstream_model=None, body=body, caller=caller,
                       endpoint=endpoint, model=model, stream=bool(body.get("stream")))
        dec.prompt_hmac = self.hmac(b"prompt\n" + _canon(body))
        dec.conversation = self.conversation_key(endpoint, body)
        keep_local: list[str] = []
        flag = False

        # 0. What the caller may ask for at all (callers.models): checked on the name asked for, before any
        # routing, so an alias a caller may not use is refused even when its request would have stayed local.
        asked = model if model is not None else p.local.default_model
        if not p.callers.may_use(caller, asked):
            dec.route, dec.status, dec.reasons = "refused", 403, ["model_not_allowed"]
            dec.message = f"the caller {caller!r} may not use the model {asked!r}"
            return dec

        if caller in p.callers.local_only:
            keep_local.append("caller_local_only")
        if data_source is not None:
            declared = {normalize(s).text.strip().casefold() for s in data_source.split(",")}
            listed = {normalize(s).text.strip().casefold() for s in p.data_sources.local_only}
            if declared & listed:
                keep_local.append("data_source_local_only")
                flag = True
        if dec.conversation is not None and dec.conversation in self.flags:
            keep_local.append("conversation_flagged")

        ex: Extracted = extract(body)
        if ex.unscannable:
            keep_local.append("unscannable")
            flag = True
        doc = Document.build(ex.segments)
        found, error = await self._scan(doc)
        if error is not None:
            dec.reasons = keep_local + [error]
            if p.on_detector_error == "refuse":
                dec.route, dec.status = "refused", 503
                dec.message = "the request could not be checked and the policy refuses unchecked requests"
                return dec
            keep_local.append(error)
        else:
            dec.detectors = dict(Counter(loc.finding.detector for loc in found))
            dec.findings = dict(Counter(loc.finding.kind for loc in found))

        wants_remote, alias = self._wants_remote(model, doc)
        redactable = (found and error is None and p.redaction.enabled and wants_remote
                      and all(self._redactable(loc, doc) for loc in found))
        if found and not redactable:
            keep_local.extend(sorted({f"content:{loc.finding.kind}" for loc in found}))
            flag = True

        if flag and dec.conversation is not None:
            self.flags.flag(dec.conversation)

        if not keep_local and wants_remote:
            if p.remote is None:
                keep_local.append("no_remote_configured")
            elif not ("*" in p.callers.remote_allowed or caller in p.callers.remote_allowed):
                keep_local.append("caller_not_allowed_remote")

        if keep_local or not wants_remote:
            dec.route = "local"
            dec.reasons = keep_local or (["auto_easy"] if model == p.difficulty.alias else ["local_model"])
            dec.upstream_model = model if (model and not self._is_alias(model)) else p.local.default_model
            dec.body = {**body, "model": dec.upstream_model}
            return dec

        assert p.remote is not None and alias is not None
        out_body = body
        if found:  # all redactable (checked above)
            out_body, dec.restore = redact(body, doc.segments, found)
            dec.redacted = dict(Counter(loc.finding.kind for loc in found))
            # defence in depth: the redacted body must scan clean, or it stays local
            recheck, err2 = await self._scan(Document.build(extract(out_body).segments))
            if err2 is not None or recheck:
                dec.route, dec.upstream_model = "local", p.local.default_model
                dec.reasons = ["redaction_incomplete"]
                dec.redacted, dec.restore = {}, {}
                dec.body = {**body, "model": dec.upstream_model}
                if dec.conversation is not None:
                    self.flags.flag(dec.conversation)
                return dec
        dec.route = "remote"
        dec.reasons = ["alias" if model in p.remote.aliases else "auto_hard"] + (["redacted"] if dec.redacted else [])
        dec.upstream_model = p.remote.aliases[alias]
        dec.body = {**out_body, "model": dec.upstream_model}
        return dec

    def _is_alias(self, model: str) -> bool:
        p = self.policy
        return model == p.difficulty.alias or (p.remote is not None and model in p.remote.aliases)

    def _wants_remote(self, model: str | None, doc: Document) -> tuple[bool, str | None]:
        p = self.policy
        if model is None or p.remote is None:
            return (model is not None and self._is_alias(model)), None
        if model in p.remote.aliases:
            return True, model
        if model == p.difficulty.alias:
            alias = p.remote_alias_for_auto()
            return (self.is_hard(doc), alias)
        return False, None

    def _redactable(self, loc: Located, doc: Document) -> bool:
        return (loc.finding.redactable and loc.finding.kind in self.policy.redaction.entities
                and loc.segment is not None and doc.segments[loc.segment].writable)

    async def _scan(self, doc: Document) -> tuple[list[Located], str | None]:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self.pool, run_detectors, self.detectors, doc)
        try:
            return await asyncio.wait_for(fut, timeout=self.policy.detect.timeout_s), None
        except TimeoutError:
            return [], "detector_timeout"
        except Exception as e:  # noqa: BLE001 — any detector failure fails closed
            return [], f"detector_error:{type(e).__name__}"
