"""Sentence splitting for radiology reports (English and German), returning character spans.

Periods in reports are mostly not sentence ends: decimals ("3.2 x 1.1 cm"), dates ("12.03.2021"), abbreviations
("approx.", "Dr.", "i.e.", "z.B.", "Nr."), list markers ("1. ...") and section numbers. We therefore look at every
candidate end ([.!?;] or a line break) and reject it when the context says it is not a boundary. Spans (not
strings) are returned so that callers such as the reference miner can map character offsets back to the report.
"""

from __future__ import annotations

import re

# Abbreviations after which a period never ends a sentence (titles, "approximately", "number", "versus", ...).
_NEVER_END = frozenset(
    """
    dr prof mr mrs ms st approx appr ca vs v no nr nos fig figs ref resp incl max min e.g eg i.e ie cf sog ggf bzw
    z.b zb z.t u.a d.h v.a o.g s.o s.u evtl vgl li re li. bds inkl insb ant post sup inf lat med dist prox mind jr sr
    sek seg lig m a aa vv lnn ln pos neg std n.a u.u z.n se ser bi im ima img abb
    """.split()
)
# Abbreviations that may also end a sentence ("... measuring 3 cm. No effusion."): a boundary only when the next
# word starts with a capital letter and is not a number.
_MAYBE_END = frozenset("cm mm ml hu etc usw sec kg mg msv mgy".split())

_CANDIDATE = re.compile(
    r"[.!?;]+[\"'”)\]]*(?=\s|$)|\n\s*\n|\n(?=\s*(?:[-•*·]\s|\d{1,2}[.)-]\s|[A-ZÄÖÜ][A-Za-zÄÖÜäöü ]{2,30}:))"
)
_TOKEN_BEFORE = re.compile(r"(\S+)$")
_DOTTED = re.compile(r"(?:[a-zäöü]\.)+[a-zäöü]")  # i.e, e.g, z.B, u.a
_LINE_START = re.compile(r"(?:^|\n|[.!?:;]\s)\s*$")


def _is_boundary(text: str, start: int, end: int) -> bool:
    mark = text[start]
    after = text[end : end + 8].lstrip()
    if not after:
        return True
    nxt = after[0]
    if mark == "\n" or mark in "!?":
        return True
    if mark == ";":
        # "lung parenchyma window; Aeration ..." splits, "(IMA: 42; 47)" does not.
        return nxt.isupper()
    head = text[max(0, start - 40) : start]
    m = _TOKEN_BEFORE.search(head)
    raw = m.group(1) if m else ""
    tok = raw.lstrip("(\"'[").lower().rsplit("-", 1)[-1]
    if tok.isdigit() and len(tok) <= 2 and _LINE_START.search(head[: len(head) - len(raw)]):
        return False  # "1. Nodule ..." list marker at the start of a line or right after a sentence
    if nxt.islower():
        return False
    if tok in _NEVER_END or _DOTTED.fullmatch(tok) or (len(tok) == 1 and tok.isalpha()):
        return False
    if tok in _MAYBE_END:
        return nxt.isupper() or nxt.isdigit() or nxt in "\"'(•-"
    return True


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of each sentence in text[start:end], whitespace trimmed; the trailing mark stays inside."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    cur = start
    for m in _CANDIDATE.finditer(text, start, end):
        if not _is_boundary(text, m.start(), m.end()):
            continue
        stop = m.end() if text[m.start()] != "\n" else m.start()
        _push(text, spans, cur, stop)
        cur = m.end()
    _push(text, spans, cur, end)
    return spans


def _push(text: str, spans: list[tuple[int, int]], a: int, b: int) -> None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    if b > a:
        spans.append((a, b))


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` as strings (see `sentence_spans`)."""
    return [text[a:b] for a, b in sentence_spans(text)]
