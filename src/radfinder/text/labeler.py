"""Offline rule-based labeler for the 18 CT-RATE abnormalities (English and German reports).

Each report is split into sentences and clauses (`clauses.clause_spans`, the same split the per-anatomy normal
flags use); every trigger mention (see `label_rules`) is classified within its clause (`clauses.mention_status`) as
affirmed, negated ("no ...", "... was not observed", "kein ...", "ohne ..."), resolved/historical ("resolved",
"no longer", "history of"; a device after "status post" stays present), or uncertain ("possible", "cannot be
excluded", "suspicious for", "V.a.").

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

from .clauses import AFFIRMED, NEGATED, RESOLVED, UNCERTAIN, clause_spans, mention_status  # noqa: F401 (re-exported)
from .findings import CTRATE_FINDINGS
from .label_rules import RULES
from .regex_gate import Gate, gate_lower
from .sentences import sentence_spans


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
        for s, e in clause_spans(sent):
            yield sent[s:e]


_status = mention_status  # the name the gate tests rebuild the pre-gate labeler with


def _rule_status(rule, clause: str, m: re.Match, gone: re.Pattern | None = None) -> str:
    """`mention_status`, except that a device rule's mention stays present after "status post" unless removed."""
    status = mention_status(clause, m.start(), m.end())
    gone = gone or rule.gone
    if status == RESOLVED and gone is not None and not gone.search(clause):
        return AFFIRMED
    return status


def _lc(p: re.Pattern | None) -> re.Pattern | None:
    """The pattern without IGNORECASE, for text that `gate_lower` lower-cased (same matches, several times faster;
    the rules hold no upper-case literal, checked in the gate tests)."""
    return None if p is None else re.compile(p.pattern, p.flags & ~re.IGNORECASE)


# Literal gates (see `regex_gate`): a rule's trigger is searched only in clauses holding one of the substrings that
# every match of it needs; rules with none of them anywhere in the report are dropped first. Skips ~90% of the
# searches and finds the same mentions as searching every clause with every rule.
_GATED = [(name, rule, Gate(rule.triggers).literals) for name, rule in RULES.items()]
_LOWER = {name: tuple(map(_lc, (r.triggers, r.veto, r.need, r.gone))) for name, r in RULES.items()}


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
        for name, status in _scan(clause, low, rules):
            out.append(Mention(name, status, section, clause.strip()))
    return out


def _scan(clause: str, low: str | None, rules: list) -> list[tuple[str, str]]:
    """Rules on one clause; with `low` (its `gate_lower`) the gates apply and the patterns run case-sensitively on
    `low` (same offsets); without it, case-insensitively on the clause."""
    out = []
    if low is None:
        for name, rule, _ in rules:
            m = rule.triggers.search(clause)
            if not m or (rule.veto is not None and rule.veto.search(clause)):
                continue
            if rule.need is not None and not rule.need.search(clause):
                continue
            out.append((name, _rule_status(rule, clause, m)))
        return out
    has = low.__contains__
    for name, rule, lits in rules:
        if lits is not None and not any(map(has, lits)):
            continue
        trig, veto, need, gone = _LOWER[name]
        m = trig.search(low)
        if not m or (veto is not None and veto.search(low)):
            continue
        if need is not None and not need.search(low):
            continue
        out.append((name, _rule_status(rule, low, m, gone)))
    return out


def clause_mentions(clause: str) -> list[tuple[str, str]]:
    """(finding, status) of every finding mentioned in one clause (from `clauses.clause_spans`)."""
    return _scan(clause, gate_lower(clause), _GATED)


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
