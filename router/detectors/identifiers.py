"""Checksum-validated identifiers with Microsoft Presidio, model-free and air-gapped.

How Presidio runs without a model or a network:
- `NoOpNlpEngine` (presidio_analyzer.nlp_engine): an NLP engine that loads nothing and returns empty
  artifacts, so no spaCy model is downloaded or loaded; spaCy is imported (Presidio depends on it)
  but only for its empty `Doc`.
- Our own `RecognizerRegistry` holding only pattern recognizers (never `load_predefined_recognizers`,
  which would add the spaCy NER recognizer): Presidio's predefined recognizer for each enabled type
  (CreditCardRecognizer validates Luhn, IbanRecognizer mod-97 + the country format, NhsRecognizer
  mod-11, UsSsnRecognizer its invalid-number rules …) plus the "loose" recognizers below.
- tldextract (used by Presidio's EmailRecognizer) is pointed at its bundled public-suffix snapshot
  with no URLs to fetch (`suffix_list_urls=()`, `cache_dir=None`) before any analysis, so it can
  never open a socket; tests/unit/test_router_detectors.py proves no socket is opened.

The loose recognizers (still Presidio `EntityRecognizer`s in the same registry) catch the disguises
Presidio's regexes miss: any of `space tab newline - . / _` (up to 4 in a row) between digits, a digit
per group ("4 1 1 1 …"), and an identifier split across two messages (router.scan joins messages
with JOINER; a split there is read both as a group boundary and as none). They work on "runs" of digits
(or letters+digits for IBAN) and accept a window only if its checksum holds:
- CREDIT_CARD: 13–19 digits starting and ending at group boundaries, a known issuer prefix and one
  of its lengths, Luhn,
  grouped as cards are written (one block, 4-4-4-4…, 4-6-5, or one digit per group), so tables and
  lists of numbers do not match;
- IBAN_CODE: two letters + two digits at a group start, the country's format, mod-97;
- UK_NHS: 10 digits grouped 10, 3-3-4 or one per group, mod-11;
- US_SSN: three groups 3-2-4 with any separators, Presidio's invalid-number rules.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")  # empty: no URL to fetch
import tldextract
import tldextract.tldextract as _tld

_tld.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)

from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer import predefined_recognizers as pr
from presidio_analyzer.nlp_engine import NoOpNlpEngine
from presidio_analyzer.predefined_recognizers.generic.iban_patterns import (
    BOS,
    EOS,
    regex_per_country,
)

from router.detectors import Detector, Finding, register
from router.policy import Policy

LANG = "en"
PRESIDIO: dict[str, str] = {
    "CREDIT_CARD": "CreditCardRecognizer", "IBAN_CODE": "IbanRecognizer", "UK_NHS": "NhsRecognizer",
    "US_SSN": "UsSsnRecognizer", "EMAIL_ADDRESS": "EmailRecognizer", "US_ITIN": "UsItinRecognizer",
    "AU_TFN": "AuTfnRecognizer", "AU_MEDICARE": "AuMedicareRecognizer", "ES_NIF": "EsNifRecognizer",
    "IT_FISCAL_CODE": "ItFiscalCodeRecognizer", "PL_PESEL": "PlPeselRecognizer",
    "IN_AADHAAR": "InAadhaarRecognizer", "SG_NRIC_FIN": "SgFinRecognizer",
    "FI_PERSONAL_IDENTITY_CODE": "FiPersonalIdentityCodeRecognizer", "UK_NINO": "UkNinoRecognizer",
    "US_NPI": "UsNpiRecognizer", "US_MBI": "UsMbiRecognizer", "IP_ADDRESS": "IpRecognizer",
}

SEPARATORS = " \t\r\n-./_"
JOINER = "\x1e"
"""router.scan joins the messages of a request with this character: a split there is not a group boundary."""
MAX_SEP = 4


@dataclass
class Run:
    chars: list[str]
    pos: list[int]
    group_start: list[bool | None]
    """True: a separator before this character; None: only a message boundary (a split there may or
    may not be one of the identifier's own group boundaries: both readings are tried)."""


def runs(text: str, *, letters: bool) -> list[Run]:
    """Maximal runs of digits (and letters when `letters`) separated by at most MAX_SEP separators."""
    out: list[Run] = []
    cur: Run | None = None
    sep = ""
    for i, c in enumerate(text):
        ok = ("0" <= c <= "9") or (letters and c.isascii() and c.isalpha())
        if ok:
            if cur is None:
                cur = Run([], [], [])
                sep = ""
            first = not cur.chars
            cur.chars.append(c)
            cur.pos.append(i)
            cur.group_start.append(True if first or sep.strip(JOINER) != "" else (None if sep else False))
            sep = ""
        elif cur is not None and (c in SEPARATORS or c == JOINER) and len(sep) < MAX_SEP:
            sep += c
        else:
            if cur is not None:
                out.append(cur)
            cur, sep = None, ""
    if cur is not None:
        out.append(cur)
    return out


MAX_SOFT = 3


def readings(run: Run) -> list[Run]:
    """The run with each message-boundary split read as a group boundary or not (2^k, k <= MAX_SOFT)."""
    soft = [k for k, g in enumerate(run.group_start) if g is None]
    if not soft:
        return [run]
    soft = soft[:MAX_SOFT]
    out = []
    for mask in range(1 << len(soft)):
        gs = [bool(g) for g in run.group_start]
        for bit, k in enumerate(soft):
            gs[k] = bool(mask >> bit & 1)
        out.append(Run(run.chars, run.pos, gs))
    return out


def _groups(run: Run, a: int, b: int) -> list[int]:
    lens, n = [], 0
    for k in range(a, b):
        if run.group_start[k] and n:
            lens.append(n)
            n = 0
        n += 1
    lens.append(n)
    return lens


def _boundary_windows(run: Run, lengths: range):
    """(a, b) windows of the run that start and end at group boundaries, with b - a in lengths."""
    starts = [k for k, s in enumerate(run.group_start) if s]
    ends = set(starts[1:]) | {len(run.chars)}
    for a in starts:
        for n in lengths:
            if a + n in ends:
                yield a, a + n


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Issuer prefixes and the lengths each issues (Visa 13/16/19, Mastercard 16, Amex 15, Diners 14–16,
# JCB/Discover/UnionPay 16–19): a Luhn-valid number of another length is not taken for a card.
_ISSUERS = [(re.compile(r"^4"), {13, 16, 19}), (re.compile(r"^(5[1-5]|2[2-7])"), {16}),
            (re.compile(r"^3[47]"), {15}), (re.compile(r"^3[0689]"), {14, 15, 16}),
            (re.compile(r"^35"), {16, 17, 18, 19}), (re.compile(r"^(6011|64[4-9]|65|62)"), {16, 17, 18, 19})]


def card_ok(digits: str) -> bool:
    return (any(rx.match(digits) and len(digits) in lengths for rx, lengths in _ISSUERS)
            and luhn(digits) and len(set(digits)) > 1)


def nhs_ok(digits: str) -> bool:
    if len(digits) != 10 or len(set(digits)) == 1:
        return False
    return sum(int(c) * w for c, w in zip(digits, range(10, 0, -1))) % 11 == 0


def ssn_ok(digits: str) -> bool:
    if len(digits) != 9 or len(set(digits)) == 1:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return digits not in ("123456789", "078051120", "219099999", "457555462")


_IBAN_RE = {cc: re.compile(BOS + rx + EOS) for cc, rx in regex_per_country.items()}


def iban_ok(s: str) -> bool:
    cc = s[:2]
    rx = _IBAN_RE.get(cc)
    if rx is None or not rx.match(s):
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def card_groups_ok(digits: str, lens: list[int]) -> bool:
    """How card numbers are written: one block; 4-4-4-… with a shorter last group; Amex 4-6-5 and
    Diners 4-6-4 for their prefixes; or one digit per group. Other groupings (tables, phone numbers
    followed by dates, lists of numbers) are not cards."""
    if len(lens) == 1 or all(n == 1 for n in lens):
        return True
    if lens == [4, 6, 5]:
        return digits[:2] in ("34", "37")
    if lens == [4, 6, 4]:
        return digits[:2] in ("30", "36", "38", "39")
    return all(n == 4 for n in lens[:-1]) and 1 <= lens[-1] <= 4


def _same_separators(text: str, run: Run, a: int, b: int) -> bool:
    """Presidio's rule for SSNs: both separators alike ("123-45-6789", not "373.59 2029")."""
    seps = [text[run.pos[k - 1] + 1:run.pos[k]] for k in range(a + 1, b) if run.group_start[k]]
    return len(seps) < 2 or seps[0] == seps[1] or any(JOINER in sep for sep in seps)


def nhs_groups_ok(lens: list[int]) -> bool:
    return lens in ([10], [3, 3, 4]) or all(n == 1 for n in lens)


class LooseDigits(EntityRecognizer):
    """Digit identifiers under separators/spacing/splits, validated by their checksum."""

    def __init__(self, entity: str):
        self.entity = entity
        super().__init__(supported_entities=[entity], name=f"Loose{entity}", supported_language=LANG)

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        out: dict[tuple[int, int], RecognizerResult] = {}
        for whole in runs(text, letters=False):
            for run in readings(whole):
                n = len(run.chars)
                if self.entity == "CREDIT_CARD" and n >= 13:
                    for a, b in _boundary_windows(run, range(13, 20)):
                        digits = "".join(run.chars[a:b])
                        if card_ok(digits) and card_groups_ok(digits, _groups(run, a, b)):
                            out[(run.pos[a], run.pos[b - 1])] = self._result(run, a, b)
                elif self.entity == "UK_NHS" and n >= 10:
                    for a, b in _boundary_windows(run, range(10, 11)):
                        if nhs_ok("".join(run.chars[a:b])) and nhs_groups_ok(_groups(run, a, b)):
                            out[(run.pos[a], run.pos[b - 1])] = self._result(run, a, b)
                elif self.entity == "US_SSN" and n >= 9:
                    for a, b in _boundary_windows(run, range(9, 10)):
                        if _groups(run, a, b) == [3, 2, 4] and ssn_ok("".join(run.chars[a:b])) \
                                and _same_separators(text, run, a, b):
                            out[(run.pos[a], run.pos[b - 1])] = self._result(run, a, b)
        return list(out.values())

    def _result(self, run: Run, a: int, b: int) -> RecognizerResult:
        return RecognizerResult(self.entity, run.pos[a], run.pos[b - 1] + 1, 1.0)


class LooseIban(EntityRecognizer):
    """IBANs under separators/spacing/lower case/splits, validated by country format and mod-97."""

    def __init__(self):
        super().__init__(supported_entities=["IBAN_CODE"], name="LooseIBAN_CODE", supported_language=LANG)

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        out = []
        for run in runs(text, letters=True):
            run.group_start = [g is not False for g in run.group_start]  # a message split may start an IBAN
            s = "".join(run.chars).upper()
            n = len(s)
            for a in range(n - 14):
                if not (run.group_start[a] and s[a].isalpha() and s[a + 1].isalpha()
                        and s[a + 2].isdigit() and s[a + 3].isdigit() and s[a:a + 2] in _IBAN_RE):
                    continue
                for length in range(min(34, n - a), 14, -1):
                    if iban_ok(s[a:a + length]):
                        out.append(RecognizerResult("IBAN_CODE", run.pos[a], run.pos[a + length - 1] + 1, 1.0))
                        break
        return out


LOOSE = {"CREDIT_CARD": lambda: LooseDigits("CREDIT_CARD"), "UK_NHS": lambda: LooseDigits("UK_NHS"),
         "US_SSN": lambda: LooseDigits("US_SSN"), "IBAN_CODE": LooseIban}


REPLACED = {"CREDIT_CARD", "UK_NHS"}
"""Presidio's CreditCardRecognizer and NhsRecognizer regexes also match two unrelated adjacent
numbers ("3610 8701 180782441", "171654 2006"); the loose recognizers find every number those find
(same Luhn / mod-11) and also check the grouping and the issuer's lengths."""


def analyzer(entities: list[str]) -> AnalyzerEngine:
    nlp = NoOpNlpEngine(models=[{"lang_code": LANG, "model_name": "none"}])
    nlp.load()
    reg = RecognizerRegistry(supported_languages=[LANG])
    for ent in entities:
        if ent not in REPLACED:
            reg.add_recognizer(getattr(pr, PRESIDIO[ent])(supported_language=LANG))
        if ent in LOOSE:
            reg.add_recognizer(LOOSE[ent]())
    return AnalyzerEngine(registry=reg, nlp_engine=nlp, supported_languages=[LANG])


class Identifiers:
    name = "identifiers"

    def __init__(self, entities: list[str], min_score: float, redactable: set[str]):
        self.entities = list(entities)
        self.min_score = min_score
        self.redactable = redactable
        self.engine = analyzer(self.entities)

    def detect(self, text: str) -> list[Finding]:
        results = self.engine.analyze(text=text, language=LANG, entities=self.entities,
                                      score_threshold=self.min_score)
        found = {(r.entity_type, r.start, r.end) for r in results}
        return [Finding(self.name, ent, s, e, ent in self.redactable) for ent, s, e in sorted(found, key=lambda f: f[1])]


@register("identifiers")
def _build(policy: Policy, options: dict[str, Any]) -> Detector:
    return Identifiers(policy.detect.identifiers, policy.detect.min_score, set(policy.redaction.entities))
