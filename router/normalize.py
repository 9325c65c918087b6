"""Text normalisation before detection, with a map back to the original offsets.

Every detector sees the same normalised text:
- NFKD compatibility decomposition, then combining marks dropped: fullwidth letters/digits,
  ligatures, superscripts, circled digits → ASCII; accents folded (José → Jose);
- every Unicode decimal digit → its ASCII digit (Arabic-Indic ٤, Extended Arabic-Indic ۴,
  Devanagari ४, Bengali, Thai, mathematical bold 𝟒 …);
- format characters (category Cf: zero-width space/joiner/non-joiner, word joiner, BOM, soft hyphen,
  bidi controls) and variation selectors removed;
- confusable letters folded to their Latin look-alike (Cyrillic and Greek capitals and lower case
  that render like Latin: а→a, О→O, Ρ→P …; see CONFUSABLES);
- dash-like characters → "-", every Unicode space → " ".

`normalize(text)` returns the new text and, for each of its characters, the offset of the original
character it came from, so a finding can be mapped back (for redaction) without a second pass.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# Latin look-alikes (a subset of Unicode's confusables.txt: the letters that render identically).
_CONFUSABLE_PAIRS = {
    # Cyrillic capitals
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "Х": "X", "У": "Y", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q", "Ԝ": "W", "Ү": "Y", "Һ": "h", "Ӏ": "I",
    # Cyrillic lower case
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "х": "x", "у": "y", "ѕ": "s", "і": "i", "ј": "j",
    "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "к": "k", "м": "m", "н": "h", "т": "t", "в": "b",
    # Greek capitals
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Greek lower case
    "ο": "o", "ι": "i", "κ": "k", "ν": "v", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "α": "a",
    # Armenian / other common ones
    "օ": "o", "ս": "u", "ց": "g", "ᴏ": "o", "ɑ": "a", "ɡ": "g", "ı": "i",
}
CONFUSABLES = dict(_CONFUSABLE_PAIRS)
_DASHES = set("‐‑‒–—―−﹘﹣－⁃")


@dataclass(frozen=True)
class Normalized:
    text: str
    index: tuple[int, ...]
    """index[i]: offset in the original text of the character that produced text[i];
    index[len(text)] = len(original) (one past the end), so spans map as [index[s], index[e-1]+1)."""

    def span(self, start: int, end: int) -> tuple[int, int]:
        """A [start, end) span of the normalised text → the [start, end) span of the original."""
        if end <= start:
            o = self.index[start]
            return o, o
        return self.index[start], self.index[end - 1] + 1


@lru_cache(maxsize=4096)
def _fold_char(c: str) -> str:
    if c in CONFUSABLES:
        return CONFUSABLES[c]
    if c in _DASHES:
        return "-"
    cat = unicodedata.category(c)
    if cat == "Cf" or "\ufe00" <= c <= "\ufe0f":
        return ""
    if cat == "Zs" or c in "\u2028\u2029\u0085":
        return " " if c not in "\u2028\u2029\u0085" else "\n"
    d = unicodedata.decimal(c, None)
    if d is not None:
        return str(d)
    out = []
    for k in unicodedata.normalize("NFKD", c):
        if unicodedata.category(k) == "Mn":
            continue
        if k in CONFUSABLES:
            k = CONFUSABLES[k]
        elif k in _DASHES:
            k = "-"
        else:
            dk = unicodedata.decimal(k, None)
            if dk is not None:
                k = str(dk)
        out.append(k)
    return "".join(out)


def normalize(text: str) -> Normalized:
    if text.isascii():
        return Normalized(text, tuple(range(len(text) + 1)))
    chars: list[str] = []
    index: list[int] = []
    for i, c in enumerate(text):
        f = c if c.isascii() else _fold_char(c)
        for k in f:
            chars.append(k)
            index.append(i)
    index.append(len(text))
    return Normalized("".join(chars), tuple(index))
