"""Reference miner: forms, distractors, snippets, the real-report answer key and (when present) the synthetic cohort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radfinder.text.references import mine_references

KEY = Path(__file__).parent / "data" / "ctclip_reference_key.json"


def refs(text):
    return [(r.series, list(r.images)) for r in mine_references(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Nodule in the RUL (series 4, image 38).", [(4, [38])]),
        ("Nodule, see Serie 3 Bild 12-15.", [(3, [12, 13, 14, 15])]),
        ("Nodules on images 206 and 286 of series 2.", [(2, [206, 286])]),
        ("Lesion on image 316/349.", [(None, [316, 349])]),
        ("Ground-glass nodule (Se: 3, Im: 86/232).", [(3, [86])]),
        ("Nodule (Section No: 52/ 192).", [(None, [52])]),
        ("Nodule in image 18 in series 2.", [(2, [18])]),
        ("serial: 201 image: 92, small bulla.", [(201, [92])]),
        ("Cyst (se 5 im: 12). Herd (Se. 5, Bi. 33). Herd S3/B45.", [(5, [12]), (5, [33]), (3, [45])]),
        ("Nodules (IMA: 42, IMA: 47).", [(None, [42]), (None, [47])]),
        ("Mass (series 4, image 124 ML) seen.", [(4, [124])]),
        ("Rundherd (Schicht 45). Bilder 3, 5 und 7 zeigen Herde.", [(None, [45]), (None, [3, 5, 7])]),
        ("Series 2 image 108 and 1-2 nodules up to 5 mm in image 99.", [(2, [108]), (2, [99])]),
        ("In serial 202, a nodule is observed in image 147.", [(202, [147])]),
        ("Contours in image 449, 17 mm, and mass in series 2 image 235.", [(None, [449]), (2, [235])]),
        ("Lesion 5 mm (601:69). Nodule (4:292, 284).", [(601, [69]), (4, [292, 284])]),
        ("Knoten (Slice 10 bis 12), Schicht-Nr. 7.", [(None, [10, 11, 12]), (None, [7])]),
    ],
)
def test_forms(text, expected):
    assert refs(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Sections 3 mm thick. In the axial sections, 109 mm was measured.",
        "Time of scan 10:30 (10:30). Ratio (1:2). CT at 08:15.",
        "Nodule 3.2 x 1.1 cm, dated 12.03.2021, Lung-RADS 4, score (3:1).",
        "L5-S1 level degeneration; S1 vertebra. A series of 3 nodules. Images are limited.",
        "Im rechten Unterlappen 5 mm Herd. Im 2. Segment kein Befund.",
        "Heart rate (72:80) and contrast dilution (1:10).",
        "Series of images show 120 HU enhancement; image quality 3 out of 5.",
    ],
)
def test_distractors_are_not_references(text):
    assert refs(text) == []


def test_shorthand_needs_context():
    assert refs("Reference values (4:103).") == []  # no lesion, no other reference: a ratio, not a slice
    assert refs("Nodule 4 mm (4:103).") == [(4, [103])]
    assert refs("Nodule (4:29).") == [(4, [29])]
    assert refs("Scan at (10:30). Nodule noted at (10:30) h.") == []
    # ratio-like pairs need a finding word and explicit references elsewhere in the report
    assert refs("Nodule (2:5).") == []
    assert refs("Nodule (2:5). Second nodule series 4 image 50.") == [(2, [5]), (4, [50])]


def test_spans_and_snippets_do_not_leak():
    text = "FINDINGS: A 5 mm nodule in the right upper lobe (series 4, image 38). No effusion."
    (r,) = mine_references(text)
    assert text[r.start : r.end] == "series 4, image 38" == r.text
    assert r.snippet == "A 5 mm nodule in the right upper lobe."
    for text in [
        "Nodules (IMA: 42, IMA: 47) in the right lung.",
        "A nodule is observed in image 147 of series 202, and no other lesion.",
        "Herd im Unterlappen (Serie 3, Bild 12-15).",
    ]:
        for r in mine_references(text):
            assert not any(str(i) in r.snippet for i in r.images), r.snippet
            assert "()" not in r.snippet and "( " not in r.snippet and " ," not in r.snippet
            assert r.snippet.count("(") == r.snippet.count(")")


def test_clause_snippets_in_multi_reference_sentence():
    text = (
        "New nodules in the left upper lobe, serial 2 image 60, in the posterobasal lower lobe, series 2 images "
        "206 and 286, and in the middle lobe at the level of series 2 image 164."
    )
    snippets = [r.snippet for r in mine_references(text)]
    assert snippets == [
        "New nodules in the left upper lobe",
        "In the posterobasal lower lobe",
        "In the middle lobe",
    ]


def test_real_reports_against_answer_key(real_data):
    import pandas as pd

    key = json.loads(KEY.read_text())
    expected = {k: [(s, imgs) for s, imgs in v] for k, v in key["references"].items()}
    df = pd.read_csv(real_data / "ct_clip_reports" / "train.csv")
    assert len(df) == key["n_reports"]
    wrong = {}
    for acc, text in zip(df["AccessionNo"], df["report_text"], strict=True):
        got = refs(text)
        if got != expected.get(acc, []):
            wrong[acc] = (got, expected.get(acc, []))
    n_refs = sum(len(v) for v in expected.values())
    print(f"answer key: {n_refs} references in {len(expected)} reports; {len(df) - len(expected)} without")
    assert not wrong


@pytest.mark.slow
def test_synthetic_cohort_precision_recall(tmp_path):
    """Against the synthetic cohort's exact truth (EN and DE reports, with distractors).

    A mined reference is correct when its span and images equal the truth and its series does too. For the
    cohort's "implicit" references (a bare image number) the generator means the thin series whatever was named
    before, while the miner inherits the series named earlier in the text, as radiologists write; those are
    scored on span and images only.
    """
    from radfinder.data import synth

    synth.make_cohort(tmp_path / "c", 6, seed=11, workers=1, show_progress=False)
    tp = fp = fn = 0
    for line in (tmp_path / "c" / "truth.jsonl").read_text().splitlines():
        t = json.loads(line)
        truth: dict[tuple[str, str], list[dict]] = {}
        for r in t["references"]:
            truth.setdefault((r["lang"], r["field"]), []).append(r)
        for lang, fields in t["texts"].items():
            for fld, text in fields.items():
                exp = truth.get((lang, fld), [])
                unmatched = list(exp)
                for r in mine_references(text):
                    hit = next(
                        (
                            e
                            for e in unmatched
                            if (e["start"], e["end"], e["images"]) == (r.start, r.end, list(r.images))
                            and (e["implicit_series"] or e["series"] == r.series)
                        ),
                        None,
                    )
                    if hit is None:
                        fp += 1
                    else:
                        unmatched.remove(hit)
                        tp += 1
                fn += len(unmatched)
    precision, recall = tp / max(1, tp + fp), tp / max(1, tp + fn)
    print(f"synthetic cohort: {tp + fn} true references, precision {precision:.4f}, recall {recall:.4f}")
    assert tp + fn > 20
    assert precision >= 0.995
    assert recall >= 0.98


def test_block_words_match_whole_words_only():
    # "moderate" ends in "rate" and "sternum" in "um": neither is a ratio or a time, so the shorthand stands.
    assert [(r.series, r.images) for r in mine_references("Small nodule (moderate) (4:32).")] == [(4, (32,))]
    assert [(r.series, r.images) for r in mine_references("Lesion near the sternum (4:32).")] == [(4, (32,))]
    assert mine_references("Heart rate (4:32).") == []


def test_time_like_shorthand_after_any_ctrate_finding_is_a_reference():
    assert [(r.series, r.images) for r in mine_references("2. Cardiomegaly (3:37). 3. No effusion.")] == [(3, (37,))]
    assert [(r.series, r.images) for r in mine_references("Kardiomegalie (3:37).")] == [(3, (37,))]
    assert mine_references("The examination started at (3:37).") == []
