"""Clause-scoped negation shared by the labeler and the per-anatomy normal flags: hand-made compound sentences, and
the normal-flag targets on the held-out half of CT-CLIP's manually labelled real reports."""

from __future__ import annotations

import pytest

from radfinder.text.anatomy import anatomy_texts
from radfinder.text.clauses import AFFIRMED, NEGATED, mention_status, split_clauses
from radfinder.text.labeler import RuleLabeler


def normal(findings: str) -> dict[str, bool]:
    return {a: not t.abnormal for a, t in anatomy_texts(findings, "", "en").items()}


def labels(findings: str) -> dict[str, int]:
    return RuleLabeler().label(findings).labels


def test_clause_splits():
    assert split_clauses("Heart size is normal, pericardial effusion of 8 mm is observed.") == [
        "Heart size is normal",
        "pericardial effusion of 8 mm is observed.",
    ]
    # lists share their negation: no side but the last is a statement of its own
    for s in (
        "No pleural effusion, pneumothorax or consolidation.",
        "Pleural effusion and pneumothorax were not observed.",
        "Mediastinal main vascular structures, heart contour, size are normal.",
        "No mass or filling defect compatible with thrombus was detected within the heart cavities.",
    ):
        assert split_clauses(s) == [s]
    assert split_clauses("The heart is of normal size with a small pericardial effusion.") == [
        "The heart is of normal size",
        "with a small pericardial effusion.",
    ]
    assert split_clauses("When examined in the lung parenchyma window; Aeration is normal.") == [
        "When examined in the lung parenchyma window;",
        "Aeration is normal.",
    ]
    assert split_clauses("No effusion but a 4 mm nodule.") == ["No effusion", "but a 4 mm nodule."]


def test_mention_status_scopes_to_the_trigger():
    c = "Thoracic aorta of normal caliber without calcification."
    assert mention_status(c, c.index("aorta"), c.index("calcification") + 6) == NEGATED
    c = "Calcified plaques in the aortic arch without dilatation"
    assert mention_status(c, 0, c.index("aortic") + 4) == AFFIRMED


@pytest.mark.parametrize(
    ("sentence", "abnormal", "finding"),
    [
        ("Heart size is normal, pericardial effusion of 8 mm is observed.", "heart", "Pericardial effusion"),
        ("Heart size is normal and pericardial effusion is seen.", "heart", "Pericardial effusion"),
        ("The heart is of normal size with a small pericardial effusion.", "heart", "Pericardial effusion"),
        ("Heart contour and size are natural, coronary artery calcifications are present.", "heart",
         "Coronary artery wall calcification"),
        ("There is no pathological wall thickening in the esophagus, and there is a small hiatal hernia.",
         "esophagus", "Hiatal hernia"),
        ("Thoracic aorta diameter is normal, calcified atheroma plaques were observed in the aortic arch.", "aorta",
         "Arterial wall calcification"),
        ("Calcific atheroma plaques were observed in the main vascular structures.", "aorta",
         "Arterial wall calcification"),
        ("Aeration of both lungs is normal, a 4 mm nodule is seen in the right upper lobe.", "lung", "Lung nodule"),
        ("No pleural effusion is seen, there is consolidation in the left lower lobe.", "lung", "Consolidation"),
    ],
)  # fmt: skip
def test_compound_sentences_flag_the_anatomy_abnormal(sentence, abnormal, finding):
    assert not normal(sentence)[abnormal], sentence
    assert labels(sentence)[finding] == 1, sentence


@pytest.mark.parametrize(
    ("sentence", "anatomy", "finding"),
    [
        ("Heart size is normal, no pericardial effusion is seen.", "heart", "Pericardial effusion"),
        ("Pericardial effusion-thickening was not observed.", "heart", "Pericardial effusion"),
        ("No pleural effusion, pneumothorax or consolidation.", "lung", "Consolidation"),
        ("Pleural effusion and pneumothorax were not observed.", "lung", "Pleural effusion"),
        ("Thoracic aorta of normal caliber without calcification.", "aorta", "Arterial wall calcification"),
        ("Thoracic esophagus calibration was normal and no significant tumoral wall thickening was detected.",
         "esophagus", "Hiatal hernia"),
        ("Trachea and both main bronchi were in the midline, no obstructive pathology was observed in the lumen.",
         "lung", "Lung nodule"),
    ],
)  # fmt: skip
def test_normal_compound_sentences_stay_normal(sentence, anatomy, finding):
    assert normal(sentence)[anatomy], sentence
    assert labels(sentence)[finding] == 0, sentence


def test_an_abnormal_clause_marks_only_its_own_anatomy():
    flags = normal("Heart size is normal, calcified plaques are seen in the wall of the aortic arch.")
    assert flags["heart"] and not flags["aorta"]
    # a clause without an anatomy but with an abnormality word belongs to the clause before it
    flags = normal("The heart is normal in size, an effusion of 8 mm is observed.")
    assert not flags["heart"]
    # a lead-in without an abnormality word does not
    assert normal("As far as can be seen, the heart contour and size are natural.")["heart"]


def test_normal_flags_on_held_out_real_reports(real_data):
    """Held-out rows 400-799 of CT-CLIP's manually labelled reports (rules developed on rows 0-399 only): a study
    with a labelled finding of an anatomy does not get that anatomy flagged normal (>= 0.995 of the pairs; 0.985 with
    the sentence-level flags, 0.999 now), and anatomies without a labelled finding keep being flagged normal: 849 of
    928 with the sentence-level flags, 848 now (one study fewer; on the development half 924 of 1001 against 923)."""
    from radfinder.eval.anatomy_flags import normal_flag_check
    from radfinder.text.findings import CTRATE_FINDINGS
    from radfinder.text.reports import read_ctclip_labeled

    path = real_data / "ct_clip_reports" / "train.csv"
    if not path.is_file():
        pytest.skip(f"absent: {path}")
    reports, table = read_ctclip_labeled(path)
    held = slice(400, 800)
    res = normal_flag_check(
        [(r.findings, r.impressions) for r in reports[held]],
        table[list(CTRATE_FINDINGS)].to_numpy()[held],
        [r.id for r in reports[held]],
    )
    assert res["pairs"] > 1000
    assert res["agreement"] >= 0.995, res["errors"]
    assert res["unlabelled"] == 928 and res["unlabelled_normal_rate"] * 928 >= 845
