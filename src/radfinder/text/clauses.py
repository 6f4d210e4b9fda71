"""Clauses of report sentences and the status of a mention inside its clause (negated, resolved, uncertain).

One implementation serves the rule labeler (`labeler.find_mentions`) and the per-anatomy normal flags
(`anatomy.RuleAssigner`): a negation cue scopes to its own clause only, so "Heart size is normal, pericardial
effusion of 8 mm is observed." holds a normal clause and an affirmed one, and "No effusion, a 4 mm nodule is seen"
does not negate the nodule.

Where a sentence splits:
- always at ";", ": " and before contrast words ("but", "however", "whereas", "while", "although", "except", ...),
  and at a comma that opens a new statement (", there", ", no", ", and no", ...);
- at a comma, "and" or "with" only when the stretch before it (back to the previous comma, "and" or "with") is a
  statement (it holds a predicate: "is", "was observed", "normal", ...) and, for a comma or "and", the stretch
  after it is one too and does not open with a verb (then it continues the statement before it). Lists keep their
  shared negation that way: in "No pleural effusion, pneumothorax or consolidation" and "Pleural effusion and
  pneumothorax were not observed" no side but the last has a predicate, so nothing splits.
A clause span keeps its closing ";" or ":" (lead-ins such as "When examined in the lung parenchyma window;" stay
recognisable as such).
"""

from __future__ import annotations

import re

from .regex_gate import gate_lower


class _Both:
    """A pattern compiled twice: case-insensitive for any text, and case-sensitive for text that `gate_lower` has
    lower-cased (same offsets, same matches; Python's `re` runs several times faster without IGNORECASE)."""

    __slots__ = ("ci", "lc")

    def __init__(self, pattern: str):
        self.ci = re.compile(pattern, re.IGNORECASE)
        self.lc = re.compile(pattern)

    def on(self, lowered: bool) -> re.Pattern:
        return self.lc if lowered else self.ci


_HARD = _Both(
    r"[;:](?=\s|$)|,\s*(?=(?:but|however|whereas|while|although|and\s+(?:no|there|a|an|the)|there|no|kein\w*)\b)"
    r"|\s(?=(?:but|however|whereas|while|although|except|apart from|aber|jedoch|während)\b)"
)
# Candidate soft splits: a comma (optionally followed by "and"), a bare "and", or the space before "with" unless
# "with" completes the word before it ("compatible with", "consistent with", "filled with").
_SOFT = _Both(r",\s*(?:(?:and|und)\s+)?|\s+(?:(?:and|und)\s+|(?=(?:with|mit)\b))")
_WITH_BOUND = _Both(
    r"(?:compatible|consistent|associated|filled|together|along|accompanied|covered|replaced|treated|compared|"
    r"vereinbar)$"
)
# A predicate makes a stretch of text a statement of its own (copulas, report verbs, the usual adjectives).
_PREDICATE = _Both(
    r"\b(?:is|are|was|were|been|has|have|had|shows?|showed|shown|seen|observed|noted|detected|identified|present|"
    r"appears?|appeared|remains?|remained|measur\w+|reach\w*|extend\w*|contains?|"
    r"normal|natural|unremarkable|preserved|enlarged|open|patent|"
    r"ist|sind|war|waren|zeigt|zeigen|besteht|bestehen|vorhanden|nachweisbar|unauffällig|regelrecht)\b"
)


# A stretch that opens with a verb has no subject of its own: it continues the statement before it ("A nodule
# ..., which was seen before, was not detected in the current examination.").
_CONTINUES = _Both(r"(?:is|are|was|were|has|have|had|ist|sind|war|waren)\b")


_ANY_SPLIT = _Both(
    r"[,;:]|\s(?:and|und|with|mit|but|however|whereas|while|although|except|apart|aber|jedoch|während)\b"
)


def _soft_spans(text: str, a: int, b: int, lowered: bool) -> list[tuple[int, int]]:
    cands = []
    with_bound = _WITH_BOUND.on(lowered)
    for m in _SOFT.on(lowered).finditer(text, a, b):
        is_with = m.start() == m.end() or not m.group(0).strip()
        if is_with and with_bound.search(text, max(a, m.start() - 12), m.start()):
            continue
        cands.append((m.start(), m.end(), is_with))
    if not cands:
        return [(a, b)]
    preds = [(m.start(), m.end()) for m in _PREDICATE.on(lowered).finditer(text, a, b)]

    def stated(x: int, y: int) -> bool:
        return any(x <= ps and pe <= y for ps, pe in preds)

    continues = _CONTINUES.on(lowered)
    out: list[tuple[int, int]] = []
    cur = a
    for k, (s, e, is_with) in enumerate(cands):
        nxt = cands[k + 1][0] if k + 1 < len(cands) else b
        prev_end = cands[k - 1][1] if k else a
        if not stated(prev_end, s):
            continue
        if not is_with and (not stated(e, nxt) or continues.match(text, e)):
            continue
        out.append((cur, s))
        cur = e
    out.append((cur, b))
    return out


def clause_spans(sentence: str) -> list[tuple[int, int]]:
    """(start, end) of each clause of one sentence, whitespace trimmed, empty clauses dropped."""
    low = gate_lower(sentence)
    lowered = low is not None and len(low) == len(sentence)
    text = low if lowered else sentence
    if not _ANY_SPLIT.on(lowered).search(text):  # most report sentences: one clause
        a, b = len(sentence) - len(sentence.lstrip()), len(sentence.rstrip())
        return [(a, b)] if b > a else []
    pieces: list[tuple[int, int]] = []
    pos = 0
    for m in _HARD.on(lowered).finditer(text):
        # ";" and ":" stay with the clause they close; the other splits drop their comma or space
        end = m.end() if m.group(0)[:1] in ";:" else m.start()
        if end > pos:
            pieces.append((pos, end))
        pos = m.end()
    if pos < len(text):
        pieces.append((pos, len(text)))
    out = []
    for a, b in pieces:
        for s, e in _soft_spans(text, a, b, lowered):
            while s < e and text[s].isspace():
                s += 1
            while e > s and text[e - 1].isspace():
                e -= 1
            if e > s:
                out.append((s, e))
    return out


def split_clauses(sentence: str) -> list[str]:
    return [sentence[a:b] for a, b in clause_spans(sentence)]


_PRE_NEG = _Both(
    r"\b(?:no|not|without|neither|nor|absence of|free of|negative for|rule out|kein\w*|ohne|nicht|weder|frei von)\b"
    r"(?P<gap>(?:\W+\w+){0,9}?)\W*$"
)
_NEG_BREAK = _Both(r"\b(?:but|however|except|apart from|other than|besides|aber|jedoch|außer)\b")
# "not observed in the previous examination" says the finding is new, not that it is absent.
_POST_NEG = _Both(
    r"\b(?:not\s+(?:been\s+)?(?:observed|detected|seen|found|present|identified|visuali[sz]ed|evident|noted|"
    r"demonstrated|determined|monitored|encountered|recognized|apparent|distinguished)"
    r"(?!\s+(?:in|on|at)\s+(?:the\s+)?(?:previous|prior|preceding|earlier|old)\b)|no longer|absent|"
    r"nicht\s+(?:mehr\s+)?(?:nachweisbar|abgrenzbar|erkennbar|vorhanden|sichtbar)|"
    r"ausgeschlossen)"
)
_RESOLVED = _Both(
    r"\b(?:resolved|disappeared|no longer|completely regressed|fully regressed|regressed completely|"
    r"history of|status post|removed|vollständig rückläufig|nicht mehr|z\.\s?n\.)"
)
_UNCERTAIN = _Both(
    r"\b(?:possibl\w*|probabl\w*|suspicio\w*|suspect\w*|questionabl\w*|may|might|could|likely|equivocal|"
    r"cannot be (?:excluded|ruled out)|not (?:be )?(?:excluded|ruled out)|differential|"
    r"v\.\s?a\.|verdacht\w*|fraglich\w*|möglich\w*|wahrscheinlich\w*|nicht auszuschließen|dd\b)|\?"
)

_LAST_WORD = re.compile(r"(?<=\W)\w+\W*$")

AFFIRMED, UNCERTAIN, NEGATED, RESOLVED = "affirmed", "uncertain", "negated", "resolved"


def mention_status(clause: str, start: int, end: int) -> str:
    """Status of the mention clause[start:end]: a negation cue up to nine words before it (or before its last word)
    or a negating predicate after it (both within the clause), else a resolution or history word, else a hedge,
    else affirmed."""
    low = gate_lower(clause)
    lowered = low is not None and len(low) == len(clause)
    text = low if lowered else clause
    pre_neg, neg_break = _PRE_NEG.on(lowered), _NEG_BREAK.on(lowered)
    # A trigger may span words ("aorta of normal caliber without calcification"): a cue inside it counts too.
    cuts = [start]
    if not text[start:end].isalnum():  # more than one word: also look before its last word
        last = _LAST_WORD.search(text, start, end)
        if last and last.start() > start:
            cuts.append(last.start())
    for cut in cuts:
        neg = pre_neg.search(text[:cut])
        if neg and not neg_break.search(neg.group("gap")):
            return NEGATED
    if _POST_NEG.on(lowered).search(text, end):
        return NEGATED
    if _RESOLVED.on(lowered).search(text):
        return RESOLVED
    if _UNCERTAIN.on(lowered).search(text):
        return UNCERTAIN
    return AFFIRMED
