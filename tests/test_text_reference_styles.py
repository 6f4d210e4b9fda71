"""Reference miner on real-world styles (issue 15.3): the hand-written style corpus with its key, adversarial
negatives, and a `hypothesis` fuzz of the miner (no crash, spans inside the text, snippets free of the reference)."""

from __future__ import annotations

import importlib.util
import random
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radfinder.text import ref_prefilter as R
from radfinder.text.references import mine_references

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("eval_references", REPO / "scripts" / "eval_references.py")
eval_references = importlib.util.module_from_spec(_spec)
sys.modules["eval_references"] = eval_references
_spec.loader.exec_module(eval_references)

CORPUS = eval_references.read_corpus(eval_references.DEFAULT)


def test_corpus_is_well_formed():
    assert len(CORPUS) >= 150
    assert {r["split"] for r in CORPUS} == {"dev", "held"}
    negatives = [r for r in CORPUS if r["style"] == "neg"]
    assert len(negatives) >= 50 and all(not r["key"] for r in negatives)
    assert all(r["key"] for r in CORPUS if r["style"] != "neg")
    assert eval_references.parse_key("4:150..152; -:7, 9") == [(4, (150, 151, 152)), (None, (7, 9))]


@pytest.mark.parametrize("split", ["dev", "held"])
def test_precision_and_recall_on_the_style_corpus(split):
    counts, errors = eval_references.score([r for r in CORPUS if r["split"] == split])
    precision, recall = eval_references.pr(counts)
    print(f"{split}: precision {precision:.4f} recall {recall:.4f} ({counts})\n" + "\n".join(errors))
    assert precision >= 0.995 and recall >= 0.97, errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Right upper lobe nodule measures 6 mm, 3:23.", [(3, (23,))]),
        ("There is a 4 mm nodule on 4:573.", [(4, (573,))]),
        ("Left lower lobe nodule (S7: 311) measures 8 mm.", [(7, (311,))]),
        ("Tiny 2 mm subpleural nodule in the right middle lobe (2:1).", [(2, (1,))]),
        ("Consolidation extends from 4:86 through 4:120.", [(4, (86,)), (4, (120,))]),
        ("Mucus plugging in the right lower lobe bronchi (4:198-4:204).", [(4, (198,)), (4, (204,))]),
    ],
)
def test_issue_styles(text, expected):
    assert [(r.series, r.images) for r in mine_references(text)] == expected


def test_range_snippet_and_spans():
    text = "Consolidation in the right lower lobe extends from 4:86 through 4:120. No effusion."
    a, b = mine_references(text)
    assert (text[a.start : a.end], text[b.start : b.end]) == ("4:86", "4:120")
    assert a.snippet == b.snippet == "Consolidation in the right lower lobe extends."
    (c,) = mine_references("Right upper lobe nodule measures 6 mm, 3:23.")
    assert c.snippet == "Right upper lobe nodule measures 6 mm."


@pytest.mark.parametrize(
    "text",
    [
        "Mass in the left breast at 10:30, 2 cm from the nipple.",
        "Nodule at 3:00 in the left breast.",
        "Results were called to Dr. Jones at 4:40 pm.",
        "The lesion-to-liver ratio is 2:1.",
        "Lymph node ratio 2:5 after therapy.",
        "Disc osteophyte complex at C5-C6 and L4:5 level.",
        "Nodule (2:5).",  # ratio-like pair without a size or an explicit reference elsewhere
        "Contrast dilution 1:4 for the nodule study.",
        "Sacral fracture, S1: 12 mm displacement.",
    ],
)
def test_refused_lookalikes(text):
    assert mine_references(text) == []


def test_reversed_prefilter_equals_forward_prefilter():
    rng = random.Random(0)
    words = "series image images imgs ima section slice bild schicht no. nr number se ser. im"
    parts = list("seriamgbldchtnou .:#-(x") + words.split()
    for _ in range(20_000):
        s = "".join(rng.choice(parts) for _ in range(rng.randint(0, 8)))[-R._WIN_BEFORE :]
        assert bool(R._BEHIND.search(s)) == bool(R._BEHIND_REV.match(s[::-1])), s


# --- fuzzing ----------------------------------------------------------------------------------------------------

_FINDINGS = ["nodule", "mass", "ground-glass opacity", "lymph node", "cyst", "consolidation", "Rundherd", "bulla"]
_PLACES = ["in the right upper lobe", "in the left lower lobe", "im Unterlappen", "at the lung base", ""]
_STYLES = [
    "(series {s}, image {i})",
    "(se {s} im: {i})",
    "series {s} image {i}",
    "image {i} of series {s}",
    "({s}:{i})",
    ", {s}:{i},",
    "on {s}:{i}",
    "(S{s}: {i})",
    "(Serie {s}, Bild {i})",
]


@st.composite
def _report(draw):
    """A report of findings with one reference each, sizes and filler text whose numbers never equal a reference's."""
    n = draw(st.integers(1, 4))
    refs, parts = [], []
    for _ in range(n):
        s = draw(st.integers(2, 23))
        i = draw(st.integers(60, 999))
        size = draw(st.integers(2, 59).filter(lambda x, s=s: x != s))
        style = draw(st.sampled_from(_STYLES))
        finding = draw(st.sampled_from(_FINDINGS))
        place = draw(st.sampled_from(_PLACES))
        sentence = f"A {size} mm {finding} {place} {style.format(s=s, i=i)}".replace("  ", " ").rstrip(",") + "."
        refs.append((s, i))
        parts.append(sentence)
        parts.append(draw(st.sampled_from(["", "No effusion.", "Heart size normal.", "Kein Erguss.", "\n\n"])))
    return " ".join(parts), refs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_report())
def test_fuzz_generated_reports(case):
    text, truth = case
    got = mine_references(text)
    assert [(r.series, r.images) for r in got] == [(s, (i,)) for s, i in truth]
    for r in got:
        assert 0 <= r.start < r.end <= len(text) and text[r.start : r.end] == r.text
        numbers = set(re.findall(r"[0-9]+", r.snippet))
        assert str(r.series) not in numbers and not numbers & {str(i) for i in r.images}, (r.snippet, text)


_ALPHABET = st.sampled_from(
    list("0123456789:;,./()- \n") + ["series ", "image ", "Se ", "S", "IMA: ", " mm", "nodule "]
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.lists(_ALPHABET, max_size=60).map("".join)))
def test_fuzz_arbitrary_text(text):
    for r in mine_references(text):
        assert 0 <= r.start < r.end <= len(text) and text[r.start : r.end] == r.text
        assert r.images and all(isinstance(i, int) and 0 <= i <= 9999 for i in r.images)
        assert r.series is None or 0 <= r.series <= 9999
