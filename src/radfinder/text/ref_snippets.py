"""Snippets of mined slice references: the sentence or clause around a reference with every reference cut out
(used by `references`)."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Text around a removed reference that would dangle: a preposition before it, brackets holding nothing else.
_LEAD_WORD = re.compile(
    r"(?:\b(?:see|cf\.|e\.g\.|siehe|vgl\.|in|on|at|auf|im|in\s+the\s+level\s+of|at\s+the\s+level\s+of)\s*)$",
    re.IGNORECASE,
)

def cut_span(text: str, cut: tuple[int, int], lo: int) -> tuple[int, int]:
    """Widen a reference span `cut` to what must go with it: a leading 'in'/'see' and brackets holding only it;
    `lo` is the start of its sentence."""
    a, b = cut
    lead = _LEAD_WORD.search(text, max(lo, a - 30), a)
    if lead:
        a = lead.start()
    la = a
    while la > lo and text[la - 1] == " ":
        la -= 1
    if la > lo and text[la - 1] in "([" and text[b:].lstrip(" ,;").startswith((")", "]")):
        close = b + len(text[b:]) - len(text[b:].lstrip(" ,;"))
        a, b = la - 1, close + 1
    return a, b


_TIDY = [
    (re.compile(r"\(\s*[,;:]*\s*\)|\[\s*[,;:]*\s*\]"), ""),
    (re.compile(r"\(\s*[,;]\s*"), "("),
    (re.compile(r"\s*[,;]\s*\)"), ")"),
    (re.compile(r"\s+([,.;:)\]])"), r"\1"),
    (re.compile(r"([(\[])\s+"), r"\1"),
    (re.compile(r",\s*(?:,\s*)+"), ", "),
    (re.compile(r"[,;:]\s*([.!?])"), r"\1"),
    (re.compile(r"\s{2,}"), " "),
]


def _balance(s: str) -> str:
    """Drop brackets left unmatched when a clause boundary fell inside "(IMA: 42, IMA: 47)"."""
    if not any(c in s for c in "()[]"):
        return s
    keep = [True] * len(s)
    stack: list[int] = []
    for i, c in enumerate(s):
        if c in "([":
            stack.append(i)
        elif c in ")]":
            if stack:
                stack.pop()
            else:
                keep[i] = False
    for i in stack:
        keep[i] = False
    return "".join(c for c, k in zip(s, keep, strict=True) if k)


_HEADER_PREFIX = re.compile(
    r"^\s*(?:findings?|impressions?|conclusions?|befunde?|beurteilung|summary|assessment|zusammenfassung)\s*:\s*",
    re.IGNORECASE,
)


def _tidy(s: str) -> str:
    s = _HEADER_PREFIX.sub("", _balance(s))
    for pat, rep in _TIDY:
        s = pat.sub(rep, s)
    s = s.strip(" ,;:-–\"'”“")
    s = re.sub(r"^(?:and|und|or|oder)\s+", "", s, flags=re.I).strip(" ,;:")
    if s and s[0].islower():
        s = s[0].upper() + s[1:]
    return s


def snippet(text: str, a: int, b: int, cuts: Iterable[tuple[int, int]]) -> str:
    out, pos = [], a
    for ca, cb in sorted(cuts):
        ca, cb = max(ca, a), min(cb, b)
        if cb <= ca or ca < pos:
            continue
        out.append(text[pos:ca])
        out.append(" ")
        pos = cb
    out.append(text[pos:b])
    return _tidy("".join(out))
