"""What in a request gets scanned, and the scan itself.

Everything that would leave is scanned, not only the user's turn: every string in the request body
except the `model` name — system/developer/user/assistant/tool messages, content parts of type
`text` and `refusal`, tool-call names and `function.arguments` (the raw JSON string, and its decoded
values too when it uses escapes like \\u0034 that would hide a digit), legacy `function_call`, tool
and function definitions, `response_format` schemas, `stop`, `user`, metadata, dict keys, the
completions `prompt` and `suffix`. Anything that cannot be scanned as text makes the request
unscannable, and an unscannable request stays local: content parts of any other type
(`image_url`, `input_audio`, `file`, unknown types, parts without a type), token-id prompts, and
a body larger than `max_chars`.

All segments are normalised (router.normalize) and joined with a record separator (\\x1e), so an
identifier split across two messages or between a message and a tool result is seen whole.
"""
from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from router.detectors import Detector, Finding
from router.detectors.identifiers import JOINER
from router.normalize import Normalized, normalize

TEXT_PART_TYPES = {"text": "text", "refusal": "refusal", "input_text": "text", "output_text": "text"}
MAX_CHARS = 2_000_000


@dataclass
class Segment:
    path: tuple[Any, ...]
    text: str
    writable: bool = True
    """False for decoded shadows and dict keys: a redaction cannot be written back there."""
    kind: str = "other"
    """content (message text, tool results, prompts), arguments (tool-call arguments) or other."""


@dataclass
class Extracted:
    segments: list[Segment] = field(default_factory=list)
    unscannable: list[str] = field(default_factory=list)


def _where(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def extract(body: dict[str, Any]) -> Extracted:
    out = Extracted()

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        if isinstance(node, str):
            is_args = path[-1:] == ("arguments",)
            kind = "arguments" if is_args else "content" if _is_content(path) else "other"
            out.segments.append(Segment(path, node, kind=kind))
            if is_args:
                _decoded_shadow(node, path)
        elif isinstance(node, dict):
            if _is_content_part(path):
                kind = node.get("type")
                if kind not in TEXT_PART_TYPES:
                    out.unscannable.append(f"{_where(path)}: content part of type {kind!r}")
                    return
            for k, v in node.items():
                if not path and k == "model":
                    continue
                if isinstance(k, str):
                    out.segments.append(Segment(path + ("<key>",), k, writable=False))
                walk(v, path + (k,))
        elif isinstance(node, list):
            if path == ("prompt",) and node and all(isinstance(x, (int, list)) for x in node):
                out.unscannable.append("prompt: token ids")
                return
            for i, v in enumerate(node):
                walk(v, path + (i,))
        # numbers, booleans, null: nothing to scan

    def _decoded_shadow(raw: str, path: tuple[Any, ...]) -> None:
        if "\\" not in raw:
            return
        try:
            decoded = json.loads(raw)
        except ValueError:
            return
        texts: list[str] = []
        _strings(decoded, texts)
        out.segments.append(Segment(path + ("<decoded>",), "\n".join(texts), writable=False, kind="arguments"))

    walk(body, ())
    if sum(len(s.text) for s in out.segments) > MAX_CHARS:
        out.unscannable.append(f"body larger than {MAX_CHARS} characters")
    return out


def _strings(node: Any, acc: list[str]) -> None:
    if isinstance(node, str):
        acc.append(node)
    elif isinstance(node, dict):
        for k, v in node.items():
            acc.append(str(k))
            _strings(v, acc)
    elif isinstance(node, list):
        for v in node:
            _strings(v, acc)


def _is_content(path: tuple[Any, ...]) -> bool:
    """messages[i].content, messages[i].content[j].text|refusal, prompt, prompt[i], suffix."""
    if path[:1] in (("prompt",), ("suffix",)):
        return True
    return len(path) >= 3 and path[0] == "messages" and path[2] == "content" and (
        len(path) == 3 or (len(path) == 5 and path[4] in ("text", "refusal")))


def _is_content_part(path: tuple[Any, ...]) -> bool:
    # messages[i].content[j]  (chat) — a dict inside a content list
    return len(path) >= 4 and path[-4] == "messages" and path[-2] == "content" and isinstance(path[-1], int)


@dataclass(frozen=True)
class Located:
    """A finding mapped back to the original text of one segment (or spanning several)."""
    finding: Finding
    segment: int | None
    start: int
    end: int
    """[start, end) in the original text of `segment`; meaningless when segment is None (spans segments)."""


@dataclass
class Document:
    segments: list[Segment]
    normalized: list[Normalized]
    text: str
    offsets: list[int]

    order: list[int]
    """Segment indices in the order they are joined into `text`."""
    contents_text: str
    contents_offsets: list[int]
    contents_order: list[int]

    @classmethod
    def build(cls, segments: list[Segment]) -> Document:
        norms = [normalize(s.text) for s in segments]
        # 1: message text and tool-call arguments in conversation order, then everything else;
        # 2: message text only (so a split between a message and a tool result is adjacent even
        #    when the assistant's tool call sits between them).
        order = [i for i, s in enumerate(segments) if s.kind != "other"] + \
                [i for i, s in enumerate(segments) if s.kind == "other"]
        contents = [i for i, s in enumerate(segments) if s.kind == "content"]
        text, offsets = cls._join(norms, order)
        ctext, coffsets = cls._join(norms, contents)
        return cls(segments, norms, text, offsets, order, ctext, coffsets, contents)

    @staticmethod
    def _join(norms: list[Normalized], order: list[int]) -> tuple[str, list[int]]:
        offsets, pos, parts = [], 0, []
        for i in order:
            offsets.append(pos)
            parts.append(norms[i].text)
            pos += len(norms[i].text) + 1
        return JOINER.join(parts), offsets

    def locate(self, f: Finding, *, contents: bool = False) -> Located:
        offsets, order = (self.contents_offsets, self.contents_order) if contents else (self.offsets, self.order)
        i = bisect_right(offsets, f.start) - 1
        j = bisect_right(offsets, max(f.start, f.end - 1)) - 1
        if i != j or i < 0:
            return Located(f, None, 0, 0)
        seg = order[i]
        s, e = self.normalized[seg].span(f.start - offsets[i], f.end - offsets[i])
        return Located(f, seg, s, e)


def run_detectors(detectors: list[Detector], doc: Document) -> list[Located]:
    """Every detector over the whole document; an exception propagates (the caller fails closed).

    The message-text-only join adds the findings that span messages there and were not seen whole
    in the first join."""
    found: list[Located] = []
    for det in detectors:
        first = [doc.locate(f) for f in det.detect(doc.text)]
        found.extend(first)
        if len(doc.contents_order) > 1 and len(doc.contents_order) != len(doc.order):
            seen = {(loc.finding.kind) for loc in first if loc.segment is None}
            for f in det.detect(doc.contents_text):
                loc = doc.locate(f, contents=True)
                if loc.segment is None and loc.finding.kind not in seen:
                    found.append(loc)
    return found
