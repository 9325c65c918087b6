"""Property test: the router's identifier gate against disguised identifiers, and on clean text.

Measures (and prints — run with `-s` to see them) the detector's recall on the enabled identifier
types under disguises, and its false-positive rate on clean text, then asserts floors.

In scope (claimed, recall floor 0.99): the canonical form; no separators (not for SSN); any of
`space - . / _` (1–3, mixed; the same twice for SSNs) between groups; one separator between every character (not SSN);
fullwidth digits/letters; Arabic-Indic, Extended Arabic-Indic, Devanagari and mathematical digits;
zero-width characters (ZWSP, ZWNJ, ZWJ, word joiner, BOM, soft hyphen) anywhere; Cyrillic/Greek
look-alike letters and lower case (IBAN); the identifier split across two user messages, or
between a user message and a tool result (with the assistant's tool call between them) — at any
position for cards, IBANs and NHS numbers, at a group boundary for SSNs; surrounded by prose.

Out of scope (not generated; documented in router/README.md): letters standing for digits
(O→0, l→1), numbers spelled out in words, encodings (base64, hex, ROT13), reversed or interleaved
digits, commas as separators, splits into three or more pieces or non-adjacent messages, SSNs
without separators or split inside a group.
"""
from __future__ import annotations

import json
import random
import string
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytest.importorskip("presidio_analyzer", reason="router extra not installed: pip install -e '.[router]'")
pytest.importorskip("fastapi", reason="router extra not installed: pip install -e '.[router]'")

from router.detectors import build_detectors
from router.detectors.identifiers import iban_ok, luhn, nhs_ok, ssn_ok
from router.scan import Document, extract, run_detectors
from tests.unit.router_fixtures import make_policy

TYPES = ["CREDIT_CARD", "IBAN_CODE", "UK_NHS", "US_SSN"]
RECALL_FLOOR = 0.99
FP_CEILING = 0.03
PROSE_FP_CEILING = 0.01
N_RECALL = 1500
N_CLEAN = 1000

WORDS = ["the", "report", "shows", "revenue", "for", "last", "quarter", "please", "summarise", "and", "compare", "with", "plan", "team", "meeting", "notes", "customer", "asked", "about", "delivery", "order", "number", "invoice", "due", "date", "version", "release", "build", "server", "latency", "budget", "forecast", "risk", "review", "draft", "email", "reply", "thanks", "regards", "schedule", "hours", "week", "month", "year", "total", "average", "count", "items", "price", "amount", "balance", "account", "page", "chapter", "section", "table", "row", "column", "value", "result", "test", "run", "score", "level", "step", "phase", "room", "floor", "building", "street", "city", "code"]

ZW = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
DIGIT_SETS = {"fullwidth": 0xFF10, "arabic_indic": 0x0660, "ext_arabic_indic": 0x06F0, "devanagari": 0x0966,
              "math_bold": 0x1D7CE}
LOOKALIKE = {"A": "А", "B": "В", "E": "Е", "K": "К", "M": "М", "H": "Н", "O": "О", "P": "Р", "C": "С", "T": "Т",
             "X": "Х", "Z": "Ζ", "I": "Ι", "N": "Ν", "Y": "Υ"}


# ---- valid synthetic identifiers ----------------------------------------------------------------

def _luhn_complete(body: str) -> str:
    for d in "0123456789":
        if luhn(body + d):
            return body + d
    raise AssertionError


def gen_card(r: random.Random) -> list[str]:
    kind = r.choice(["visa", "mc", "amex", "disc"])
    if kind == "amex":
        num = _luhn_complete(r.choice(["34", "37"]) + "".join(r.choices(string.digits, k=12)))
        return [num[:4], num[4:10], num[10:]]
    prefix = {"visa": "4", "mc": r.choice(["51", "52", "53", "54", "55"]), "disc": "6011"}[kind]
    num = _luhn_complete(prefix + "".join(r.choices(string.digits, k=15 - len(prefix))))
    return [num[i:i + 4] for i in range(0, 16, 4)]


IBAN_FORMATS = {"GB": "AAAANNNNNNNNNNNNNN", "DE": "N" * 18, "NL": "AAAANNNNNNNNNN", "ES": "N" * 20,
                "BE": "N" * 12, "FR": "NNNNNNNNNNCCCCCCCCCCCNN"}


def gen_iban(r: random.Random) -> list[str]:
    cc = r.choice(sorted(IBAN_FORMATS))
    bban = "".join(r.choice(string.ascii_uppercase) if f == "A" else r.choice(string.digits) if f == "N"
                   else r.choice(string.ascii_uppercase + string.digits) for f in IBAN_FORMATS[cc])
    num = int("".join(str(int(c, 36)) for c in bban + cc + "00"))
    iban = cc + f"{98 - num % 97:02d}" + bban
    assert iban_ok(iban), iban
    return [iban[i:i + 4] for i in range(0, len(iban), 4)]


def gen_nhs(r: random.Random) -> list[str]:
    while True:
        body = "".join(r.choices(string.digits, k=9))
        check = 11 - sum(int(c) * w for c, w in zip(body, range(10, 1, -1))) % 11
        check = 0 if check == 11 else check
        if check != 10 and nhs_ok(body + str(check)):
            n = body + str(check)
            return [n[:3], n[3:6], n[6:]]


def gen_ssn(r: random.Random) -> list[str]:
    while True:
        area = r.choice([f"{a:03d}" for a in list(range(1, 666)) + list(range(667, 900))])
        n = area + f"{r.randint(1, 99):02d}" + f"{r.randint(1, 9999):04d}"
        if ssn_ok(n):
            return [n[:3], n[3:5], n[5:]]


GEN = {"CREDIT_CARD": gen_card, "IBAN_CODE": gen_iban, "UK_NHS": gen_nhs, "US_SSN": gen_ssn}


# ---- disguises ----------------------------------------------------------------------------------

def render(groups: list[str], kind: str, r: random.Random, disg: list[str]) -> str:
    if "compact" in disg:
        text = "".join(groups)
    elif "every_char" in disg:
        sep = r.choice([" ", "-", ".", "_"])
        text = sep.join("".join(groups))
    else:
        seps = [" "] * (len(groups) - 1)
        if "separators" in disg:
            seps = ["".join(r.choices([" ", "-", ".", "/", "_"], k=r.randint(1, 3))) for _ in seps]
            if kind == "US_SSN":  # SSNs: the same separator twice (Presidio's rule; mixed is out of scope)
                seps = [seps[0]] * len(seps)
        text = groups[0] + "".join(s + g for s, g in zip(seps, groups[1:]))
    if "lowercase" in disg:
        text = text.lower()
    if "lookalike" in disg:
        text = "".join(LOOKALIKE.get(c, c) if r.random() < 0.7 else c for c in text)
    if "fullwidth_letters" in disg:
        text = "".join(chr(ord(c) - 0x41 + 0xFF21) if "A" <= c <= "Z" else c for c in text)
    for name, base in DIGIT_SETS.items():
        if name in disg:
            text = "".join(chr(base + int(c)) if c.isascii() and c.isdigit() else c for c in text)
    if "zero_width" in disg:
        chars = list(text)
        for _ in range(r.randint(1, 4)):
            chars.insert(r.randint(1, len(chars) - 1), r.choice(ZW))
        text = "".join(chars)
    return text


def disguises_for(kind: str) -> list[str]:
    base = ["separators", "zero_width", *DIGIT_SETS]
    if kind != "US_SSN":
        base += ["compact", "every_char"]
    if kind == "IBAN_CODE":
        base += ["lowercase", "lookalike", "fullwidth_letters"]
    return base


def sentence(r: random.Random, n: int) -> str:
    return " ".join(r.choice(WORDS) for _ in range(n))


def split_point(text: str, groups_text_boundaries: bool, r: random.Random) -> int:
    if groups_text_boundaries:
        cuts = [i for i in range(1, len(text)) if not text[i - 1].isalnum() and text[i].isalnum()]
        return r.choice(cuts) if cuts else len(text) // 2
    return r.randint(1, len(text) - 1)


def body_for(ident: str, kind: str, r: random.Random, where: str) -> dict:
    pre, post = sentence(r, r.randint(0, 8)), sentence(r, r.randint(0, 8))
    if where == "one_message":
        return {"model": "frontier", "messages": [{"role": "user", "content": f"{pre} {ident} {post}".strip()}]}
    cut = split_point(ident, kind == "US_SSN", r)
    a, b = f"{pre} {ident[:cut]}".strip(), f"{ident[cut:]} {post}".strip()
    if where == "two_messages":
        return {"model": "frontier", "messages": [{"role": "user", "content": a}, {"role": "user", "content": b}]}
    return {"model": "frontier", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": a},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "lookup_record", "arguments": json.dumps({"query": sentence(r, 3)})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": b}]}


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    return build_detectors(make_policy(tmp_path_factory.mktemp("prop")))


def detected(detectors, body) -> set[str]:
    doc = Document.build(extract(body).segments)
    return {loc.finding.kind for loc in run_detectors(detectors, doc)}


def profile(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None, print_blob=False,
                    suppress_health_check=list(HealthCheck), phases=[Phase.generate])


def test_recall_on_disguised_identifiers(detectors):
    stats: Counter = Counter()
    misses: list[str] = []

    @profile(N_RECALL)
    @given(kind=st.sampled_from(TYPES), seed=st.integers(0, 2**32 - 1), data=st.data())
    def run(kind, seed, data):
        r = random.Random(seed)
        disg = data.draw(st.lists(st.sampled_from(disguises_for(kind)), max_size=3, unique=True))
        if "compact" in disg and "every_char" in disg:
            disg.remove("every_char")
        digit_sets = [d for d in disg if d in DIGIT_SETS]
        for extra in digit_sets[1:]:
            disg.remove(extra)
        where = data.draw(st.sampled_from(["one_message", "two_messages", "tool_result"]))
        ident = render(GEN[kind](r), kind, r, disg)
        hit = kind in detected(detectors, body_for(ident, kind, r, where))
        for label in [kind, where, *(disg or ["canonical"])]:
            stats[(label, "n")] += 1
            stats[(label, "hit")] += hit
        stats[("all", "n")] += 1
        stats[("all", "hit")] += hit
        if not hit:
            misses.append(f"{kind} {where} {disg}: {ident!r}")

    run()
    labels = sorted({k for k, _ in stats})
    print("\nrecall by label (hits/n):")
    for label in labels:
        n, h = stats[(label, "n")], stats[(label, "hit")]
        print(f"  {label:18s} {h:5d}/{n:<5d} {h / n:.4f}")
    recall = stats[("all", "hit")] / stats[("all", "n")]
    print(f"RECALL {recall:.4f} over {stats[('all', 'n')]} disguised identifiers; misses: {misses[:10]}")
    assert recall >= RECALL_FLOOR, misses[:20]


def _bad_number(r: random.Random) -> str:
    """A random number that fails every enabled checksum for its length."""
    while True:
        n = r.choice(["1", "2", "3", "4", "5", "6", "7", "8", "9"]) + "".join(r.choices(string.digits, k=r.randint(0, 18)))
        if 13 <= len(n) <= 19 and luhn(n):
            continue
        if len(n) == 10 and nhs_ok(n):
            continue
        return n


def _bad_iban(r: random.Random) -> str:
    while True:
        groups = gen_iban(r)
        s = "".join(groups)
        s = s[:2] + f"{(int(s[2:4]) + r.randint(1, 96)) % 100:02d}" + s[4:]
        if not iban_ok(s):
            return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


def clean_text(r: random.Random, words: float = 0.6) -> str:
    """Words, and (1 - words) of the tokens numbers: checksum-failing long numbers, IBAN-shaped strings
    failing mod-97, decimals, dates, phone numbers."""
    parts = []
    for _ in range(r.randint(5, 40)):
        x = r.random()
        if x < words:
            parts.append(r.choice(WORDS))
            continue
        x = 0.6 + (x - words) / (1 - words) * 0.4
        if x < 0.6:
            parts.append(r.choice(WORDS))
        elif x < 0.8:
            parts.append(_bad_number(r))
        elif x < 0.85:
            parts.append(_bad_iban(r))
        elif x < 0.9:
            parts.append(f"{r.randint(1, 999)}.{r.randint(0, 99)}")
        elif x < 0.95:
            parts.append(f"{r.randint(2000, 2030)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}")
        else:
            parts.append(f"+44 {r.randint(1000, 9999)} {r.randint(100000, 999999)}")
    return " ".join(parts)


def test_false_positive_rate_on_clean_text(detectors):
    stats: Counter = Counter()
    fps: list[str] = []

    @profile(N_CLEAN)
    @given(seed=st.integers(0, 2**32 - 1), n_messages=st.integers(1, 3), dense=st.booleans())
    def run(seed, n_messages, dense):
        r = random.Random(seed)
        words = 0.6 if dense else 0.95
        body = {"model": "frontier", "messages": [{"role": "user", "content": clean_text(r, words)}
                                                  for _ in range(n_messages)]}
        found = detected(detectors, body)
        label = ("numeric" if dense else "prose") + ("-1msg" if n_messages == 1 else "-multi")
        for lab in (label, "all"):
            stats[(lab, "n")] += 1
            stats[(lab, "fp")] += bool(found)
        for k in found:
            stats[(k, "type")] += 1
        if found:
            fps.append(f"{label} {sorted(found)}: {' | '.join(m['content'] for m in body['messages'])[:200]!r}")

    run()
    print("\nfalse positives by text class (flagged/n):")
    for lab in sorted({k for k, kind in stats if kind == "n"}):
        n, f = stats[(lab, "n")], stats[(lab, "fp")]
        print(f"  {lab:14s} {f:4d}/{n:<4d} {f / n:.4f}")
    rate = stats[("all", "fp")] / stats[("all", "n")]
    print(f"FP RATE {rate:.4f} by type { {k: v for (k, kind), v in stats.items() if kind == 'type'} }; e.g. {fps[:3]}")
    assert rate <= FP_CEILING, fps[:10]
    prose = stats[("prose-1msg", "fp")] + stats[("prose-multi", "fp")]
    assert prose / (stats[("prose-1msg", "n")] + stats[("prose-multi", "n")]) <= PROSE_FP_CEILING, fps[:10]
