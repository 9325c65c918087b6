"""Deny-lists and site patterns, matched on the normalised text (router.normalize).

- code names and data-source names: case-insensitive, whole words (no letter/digit either side),
  the words of a multi-word name separated by any run of spaces, newlines, `-`, `_` or `.`;
  zero-width characters, fullwidth letters and Cyrillic/Greek look-alikes are already folded away;
- classification markings: as written (case-sensitive by default, so "keep it confidential" in
  prose is not a marking, "CONFIDENTIAL" is), whole words, flexible spacing between words;
- site patterns: the policy's regexes, as given (Python `re`).
None of these is redactable: such a request stays local.
"""
from __future__ import annotations

import re
from typing import Any

from router.detectors import Detector, Finding, register
from router.normalize import normalize
from router.policy import Policy

_WS = r"[\s\x1e\-_.]+"


def _term_regex(terms: list[str], *, case_sensitive: bool) -> re.Pattern[str] | None:
    alts = []
    for t in sorted({normalize(t).text.strip() for t in terms if t.strip()}, key=len, reverse=True):
        words = t.split()
        alts.append(_WS.join(re.escape(w) for w in words))
    if not alts:
        return None
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.compile(r"(?<![^\W_])(?:" + "|".join(alts) + r")(?![^\W_])", flags)


class Lexicon:
    name = "lexicon"

    def __init__(self, code_names: list[str], data_sources: list[str], markings: list[str], markings_cs: bool):
        self.res = [(kind, rx) for kind, rx in (
            ("CODE_NAME", _term_regex(code_names, case_sensitive=False)),
            ("DATA_SOURCE", _term_regex(data_sources, case_sensitive=False)),
            ("MARKING", _term_regex(markings, case_sensitive=markings_cs))) if rx is not None]

    def detect(self, text: str) -> list[Finding]:
        return [Finding(self.name, kind, m.start(), m.end()) for kind, rx in self.res for m in rx.finditer(text)]


class Patterns:
    name = "patterns"

    def __init__(self, patterns: dict[str, str]):
        self.res = [(f"PATTERN:{k}", re.compile(v)) for k, v in patterns.items()]

    def detect(self, text: str) -> list[Finding]:
        return [Finding(self.name, kind, m.start(), m.end()) for kind, rx in self.res for m in rx.finditer(text)]


@register("lexicon")
def _lexicon(policy: Policy, options: dict[str, Any]) -> Detector:
    d = policy.detect
    return Lexicon(d.code_names, policy.data_sources.local_only, d.markings, d.markings_case_sensitive)


@register("patterns")
def _patterns(policy: Policy, options: dict[str, Any]) -> Detector:
    return Patterns(policy.detect.patterns)
