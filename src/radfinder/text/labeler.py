"""Offline rule-based labeler for the 18 CT-RATE abnormalities (English and German reports).

Each report is split into sentences and clauses; every trigger mention (see `label_rules`) is classified as
affirmed, negated ("no ...", "... was not observed", "kein ...", "ohne ..."), resolved/historical ("resolved",
"no longer", "history of"), or uncertain ("possible", "cannot be excluded", "suspicious for", "V.a.").

How mentions become labels:
- 1 if any mention is affirmed (in findings or impression); an affirmed mention is not cancelled by a negated
  one elsewhere, because reports often negate one location and affirm another.
- Uncertain-only mentions follow `uncertain`: "positive" (default: CT-RATE's manual labels mark hedged findings
  such as "nodules, possibly sequelae" as present; on the first 400 manual labels this scores higher than
  "negative"), "negative", or "unknown" (-1).
- 0 otherwise (negated, resolved, historical or never mentioned): CT-RATE counts unmentioned findings as absent.
- -1 for every finding when the report has no text.
Scores for ranking metrics (AUROC): affirmed 1.0 (0.9 when only in findings and the impression is present but
silent), uncertain 0.5, negated or resolved 0.05, unmentioned 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .findings import CTRATE_FINDINGS
from .label_rules import RULES
from .regex_gate import Gate, gate_lower
from .sentences import sentence_spans

_CLAUSE_SPLIT = re.compile(
    r";|:\s|,\s*(?=(?:but|however|whereas|while|although|which|and\s+(?:no|there|a|an|the)|there|no|kein\w*)\b)"
    r"|\s(?=(?:but|however|whereas|although|except|apart from|aber|jedoch|während)\b)",
    re.IGNORECASE,
)
_PRE_NEG = re.compile(
    r"\b(?:no|not|without|neither|nor|absence of|free of|negative for|rule out|kein\w*|ohne|nicht|weder|frei von)\b"
    r"(?P<gap>(?:\W+\w+){0,9}?)\W*$",
    re.IGNORECASE,
)
_NEG_BREAK = re.compile(r"\b(?:but|however|except|apart from|other than|besides|aber|jedoch|außer)\b", re.I)
_POST_NEG = re.compile(
    r"\b(?:not\s+(?:been\s+)?(?:observed|detected|seen|found|present|identified|visuali[sz]ed|evident|noted|"
    r"demonstrated|determined|monitored|encountered|recognized|apparent|distinguished)|no longer|absent|"
    r"nicht\s+(?:mehr\s+)?(?:nachweisbar|abgrenzbar|erkennbar|vorhanden|sichtbar)|"
    r"ausgeschlossen)",
    re.IGNORECASE,
)
_RESOLVED = re.compile(
    r"\b(?:resolved|disappeared|no longer|completely regressed|fully regressed|regressed completely|"
    r"history of|status post|removed|vollständig rückläufig|nicht mehr|z\.\s?n\.)",
    re.IGNORECASE,
)
_UNCERTAIN = re.compile(
    r"\b(?:possibl\w*|probabl\w*|suspicio\w*|suspect\w*|questionabl\w*|may|might|could|likely|equivocal|"
    r"cannot be (?:excluded|ruled out)|not (?:be )?(?:excluded|ruled out)|differential|"
    r"v\.\s?a\.|verdacht\w*|fraglich\w*|möglich\w*|wahrscheinlich\w*|nicht auszuschließen|dd\b)|\?",
    re.IGNORECASE,
)

AFFIRMED, UNCERTAIN, NEGATED, RESOLVED = "affirmed", "uncertain", "negated", "resolved"


@dataclass
class Mention:
    finding: str
    status: str
    section: str  # "findings" or "impressions"
    clause: str


@dataclass
class LabelResult:
    labels: dict[str, int]
    scores: dict[str, float]
    mentions: list[Mention] = field(default_factory=list)


def _clauses(text: str) -> Iterable[str]:
    for a, b in sentence_spans(text):
        sent = text[a:b]
        pos = 0
        for m in _CLAUSE_SPLIT.finditer(sent):
            if m.start() > pos:
                yield sent[pos : m.start()]
            pos = m.end()
        if pos < len(sent):
            yield sent[pos:]


def _status(clause: str, start: int, end: int) -> str:
    before, after = clause[:start], clause[end:]
    neg = _PRE_NEG.search(before)
    if neg and not _NEG_BREAK.search(neg.group("gap")):
        return NEGATED
    if _POST_NEG.search(after):
        return NEGATED
    if _RESOLVED.search(clause):
        return RESOLVED
    if _UNCERTAIN.search(clause):
        return UNCERTAIN
    return AFFIRMED


# Literal gates (see `regex_gate`): a rule's trigger is searched only in clauses holding one of the substrings that
# every match of it needs; rules with none of them anywhere in the report are dropped first. Skips ~90% of the
# searches and finds the same mentions as searching every clause with every rule.
_GATED = [(name, rule, Gate(rule.triggers).literals) for name, rule in RULES.items()]


def find_mentions(text: str, section: str = "findings", gated: bool = True) -> list[Mention]:
    """Every mention of a CT-RATE finding in `text`, with its status. `gated=False` searches every clause with
    every rule (the same mentions, slower: the reference the gates are measured against)."""
    out: list[Mention] = []
    low_text = gate_lower(text) if gated else None
    rules = _GATED
    if low_text is not None:
        has = low_text.__contains__
        rules = [g for g in _GATED if g[2] is None or any(map(has, g[2]))]
    for clause in _clauses(text):
        low = (clause.lower() if low_text is not None else gate_lower(clause)) if gated else None
        has = low.__contains__ if low is not None else None
        for name, rule, lits in rules:
            if has is not None and lits is not None and not any(map(has, lits)):
                continue
            m = rule.triggers.search(clause)
            if not m:
                continue
            if rule.veto is not None and rule.veto.search(clause):
                continue
            if rule.need is not None and not rule.need.search(clause):
                continue
            out.append(Mention(name, _status(clause, m.start(), m.end()), section, clause.strip()))
    return out


class RuleLabeler:
    """`RuleLabeler(uncertain="positive").label(findings, impressions)` -> LabelResult (see module doc)."""

    def __init__(self, uncertain: str = "positive"):
        if uncertain not in ("positive", "negative", "unknown"):
            raise ValueError(f"uncertain must be positive|negative|unknown, got {uncertain!r}")
        self.uncertain = uncertain

    def label(self, findings: str, impressions: str = "") -> LabelResult:
        if not (findings or "").strip() and not (impressions or "").strip():
            return LabelResult({f: -1 for f in CTRATE_FINDINGS}, {f: 0.5 for f in CTRATE_FINDINGS})
        mentions = find_mentions(findings or "", "findings") + find_mentions(impressions or "", "impressions")
        labels, scores = {}, {}
        unc_value = {"positive": 1, "negative": 0, "unknown": -1}[self.uncertain]
        for f in CTRATE_FINDINGS:
            ms = [m for m in mentions if m.finding == f]
            aff = [m for m in ms if m.status == AFFIRMED]
            if aff:
                labels[f] = 1
                in_imp = any(m.section == "impressions" for m in aff)
                scores[f] = 1.0 if in_imp or not impressions else 0.9
            elif any(m.status == UNCERTAIN for m in ms):
                labels[f], scores[f] = unc_value, 0.5
            elif ms:
                labels[f], scores[f] = 0, 0.05
            else:
                labels[f], scores[f] = 0, 0.0
        return LabelResult(labels, scores, mentions)
