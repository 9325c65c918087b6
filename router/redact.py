"""Optional redaction: detected identifiers → placeholders before a request goes out, restored in the answer.

Off unless the policy sets `redaction.enabled: true`. Only identifier types listed in
`redaction.entities` are replaced; the same value gets the same placeholder (`<CREDIT_CARD_1>`)
everywhere in the request. The mapping lives only in the request's memory, never in a log.
"""
from __future__ import annotations

import copy
import json
import re
from typing import Any

from router.scan import Located, Segment

PLACEHOLDER_RE = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")
MAX_PLACEHOLDER = 48


def redact(body: dict[str, Any], segments: list[Segment], found: list[Located]) -> tuple[dict[str, Any], dict[str, str]]:
    """A redacted copy of `body` and {placeholder: original}. Every finding must be located in a writable segment."""
    by_seg: dict[int, list[Located]] = {}
    for loc in found:
        assert loc.segment is not None and segments[loc.segment].writable
        by_seg.setdefault(loc.segment, []).append(loc)
    out = copy.deepcopy(body)
    value_to_ph: dict[tuple[str, str], str] = {}
    counters: dict[str, int] = {}
    mapping: dict[str, str] = {}
    for si, locs in by_seg.items():
        seg = segments[si]
        spans = _merge(sorted((loc.start, loc.end, loc.finding.kind) for loc in locs))
        text = seg.text
        for start, end, kind in reversed(spans):
            value = text[start:end]
            key = (kind, value)
            if key not in value_to_ph:
                counters[kind] = counters.get(kind, 0) + 1
                ph = f"<{kind}_{counters[kind]}>"
                value_to_ph[key] = ph
                mapping[ph] = value
            text = text[:start] + value_to_ph[key] + text[end:]
        _set(out, seg.path, text)
    return out, mapping


def _merge(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    merged: list[tuple[int, int, str]] = []
    for s, e, k in spans:
        if merged and s < merged[-1][1]:
            ps, pe, pk = merged[-1]
            merged[-1] = (ps, max(pe, e), pk)
        else:
            merged.append((s, e, k))
    return merged


def _set(node: Any, path: tuple[Any, ...], value: str) -> None:
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def restore_text(text: str, mapping: dict[str, str]) -> str:
    if not mapping:
        return text
    return PLACEHOLDER_RE.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)


def restore_json(obj: Any, mapping: dict[str, str]) -> Any:
    """Every string in a (non-streamed) response, placeholders put back."""
    if isinstance(obj, str):
        return restore_text(obj, mapping)
    if isinstance(obj, list):
        return [restore_json(v, mapping) for v in obj]
    if isinstance(obj, dict):
        return {k: restore_json(v, mapping) for k, v in obj.items()}
    return obj


class StreamRestorer:
    """Restores placeholders in an SSE stream whose deltas may cut a placeholder in two.

    Per choice and per text field, text after an unclosed "<" (up to MAX_PLACEHOLDER characters) is
    held back until the next delta closes it or the stream ends."""

    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping
        self.pending: dict[tuple[int, str], str] = {}
        self.buf = b""

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = []
        while b"\n\n" in self.buf:
            event, self.buf = self.buf.split(b"\n\n", 1)
            out.append(self._event(event) + b"\n\n")
        return b"".join(out)

    def close(self) -> bytes:
        rest = self._event(self.buf) + b"\n\n" if self.buf.strip() else b""
        return rest

    def _event(self, event: bytes) -> bytes:
        lines = []
        for line in event.split(b"\n"):
            if line.startswith(b"data:") and line[5:].strip() not in (b"[DONE]", b""):
                try:
                    chunk = json.loads(line[5:])
                except ValueError:
                    lines.append(line)
                    continue
                lines.append(b"data: " + json.dumps(self._chunk(chunk)).encode())
            else:
                lines.append(line)
        return b"\n".join(lines)

    def _chunk(self, chunk: dict[str, Any]) -> dict[str, Any]:
        for choice in chunk.get("choices") or []:
            idx = choice.get("index", 0)
            holder, field = (choice["delta"], "content") if isinstance(choice.get("delta"), dict) else (choice, "text")
            text = holder.get(field)
            final = choice.get("finish_reason") is not None
            if isinstance(text, str) or final:
                key = (idx, field)
                full = self.pending.pop(key, "") + (text or "")
                emit, hold = full, ""
                if not final:
                    cut = full.rfind("<")
                    if cut != -1 and ">" not in full[cut:] and len(full) - cut < MAX_PLACEHOLDER:
                        emit, hold = full[:cut], full[cut:]
                if hold:
                    self.pending[key] = hold
                if isinstance(text, str) or emit:
                    holder[field] = restore_text(emit, self.mapping)
            delta = choice.get("delta")
            if isinstance(delta, dict):
                for tc in delta.get("tool_calls") or []:
                    fn = tc.get("function") or {}
                    if isinstance(fn.get("arguments"), str):
                        fn["arguments"] = restore_text(fn["arguments"], self.mapping)
        return chunk
