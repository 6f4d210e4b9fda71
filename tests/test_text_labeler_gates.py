"""The labeler's literal gates skip regex searches without changing a single mention: checked against the same
rules run on every clause (the pre-gate labeler, rebuilt here), on hand-made and fuzzed report text."""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radfinder.text import labeler as L
from radfinder.text.label_rules import RULES
from radfinder.text.regex_gate import UNSAFE, Gate, gate_lower, literal_gate


def ungated_mentions(text: str, section: str = "findings") -> list[L.Mention]:
    """Every rule on every clause, as the labeler did before the gates."""
    out = []
    for clause in L._clauses(text):
        for name, rule in RULES.items():
            m = rule.triggers.search(clause)
            if not m or (rule.veto is not None and rule.veto.search(clause)):
                continue
            if rule.need is not None and not rule.need.search(clause):
                continue
            out.append(L.Mention(name, L._rule_status(rule, clause, m), section, clause.strip()))
    return out


def test_unsafe_characters_are_exactly_those_re_folds_onto_ascii():
    az = re.compile("[a-z]", re.IGNORECASE)
    found = {c for c in map(chr, range(128, sys.maxunicode + 1)) if not 0xD800 <= ord(c) < 0xE000 and az.match(c)}
    assert "".join(sorted(found)) == "".join(sorted(UNSAFE))
    # every other character that matches a gate literal case-insensitively lower-cases onto it
    patterns = [p for r in RULES.values() for p in (r.triggers, r.veto, r.need) if p is not None]
    chars = {x for p in patterns for s in literal_gate(p) or () for x in s}
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000 and chr(c) not in UNSAFE)
    for x in chars:
        for m in re.finditer(re.escape(x), every, re.IGNORECASE):
            assert x in m.group().lower(), (x, m.group())


def test_literal_gate_examples():
    gate = literal_gate(re.compile(r"pericardial (?:effusion|fluid)|hydropericard", re.I))
    assert gate == ("hydropericard", "pericardial ")
    assert literal_gate(re.compile(r"coronar\w*\W+(?:\w+\W+){0,8}calcif", re.I)) == ("coronar",)
    assert literal_gate(re.compile(r"\bclips?\b|\w+", re.I)) is None  # one branch needs no literal
    assert literal_gate(re.compile(r"(?:nodule)?", re.I)) is None
    assert gate_lower("Nodule") == "nodule" and gate_lower("Knötchen •") == "knötchen •"
    assert gate_lower("PULMONARY NODULE İN") is None and gate_lower("ſ") is None
    assert Gate(None).may_match("anything") and Gate(re.compile("abc")).may_match(None)


_SAMPLES = [
    "Heart size is enlarged. No pericardial effusion; calcified plaques in the aorta and coronary arteries.",
    "A 5 mm nodule in the right lung, possibly sequelae. Lymph nodes not enlarged. Bullae at both apices.",
    "• Mosaic attenuation pattern. • Bronchiectasis, peribronchial thickening and septal thickening.",
    "Kardiomegalie. Kein Perikarderguss. Rundherd im Unterlappen, fraglich. Pleuraerguss rechts.",
    "PLEURAL EFFUSION ON THE LEFT. CONSOLIDATION İN THE RİGHT LOWER LOBE. ATELECTAſIS.",
    "Status post sternotomy with sternal wires; pacemaker leads in place. Hiatal hernia.",
    "Ground-glass opacities and consolidation; no emphysema but subcutaneous emphysema present.",
]
_WORDS = sorted({w for s in _SAMPLES for w in re.findall(r"\w+|[^\w\s]", s)}) + ["İ", "ı", "ſ", "K", "\n", "  "]


@pytest.mark.parametrize("text", _SAMPLES)
def test_gated_equals_ungated_on_samples(text):
    assert L.find_mentions(text) == ungated_mentions(text)
    assert L.find_mentions(text, "impressions") == ungated_mentions(text, "impressions")
    assert L.find_mentions(text, gated=False) == ungated_mentions(text)  # the labeler's own reference path


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=80).map(" ".join))
def test_gated_equals_ungated_fuzzed(text):
    assert L.find_mentions(text) == ungated_mentions(text)


def test_gated_equals_ungated_on_real_reports(real_data):
    import pandas as pd

    texts = pd.read_csv(real_data / "ct_clip_reports" / "train.csv")["report_text"].tolist()
    for text in texts:
        assert L.find_mentions(text) == ungated_mentions(text)


def test_rules_hold_no_upper_case_literal():
    """Gated clauses run each rule without IGNORECASE on the lower-cased clause: an upper-case literal in a rule
    would never match there."""
    import re as _re

    for name, pats in L._LOWER.items():
        for p in pats:
            if p is None:
                continue
            literal = _re.sub(r"\\[A-Za-z]|\(\?P<\w+>", "", p.pattern)
            assert literal == literal.lower(), name
