"""Rule-based labeler: negation, uncertainty, resolution, German, section handling, and the real manual labels."""

from __future__ import annotations

import numpy as np
import pytest

from radfinder.text.findings import CTRATE_FINDINGS
from radfinder.text.labeler import RuleLabeler


def lab(findings, impressions="", **kw):
    return RuleLabeler(**kw).label(findings, impressions).labels


def test_affirmed_negated_and_unmentioned():
    out = lab("Pleural effusion on the right. No pericardial effusion. Emphysema in both upper lobes.")
    assert out["Pleural effusion"] == 1
    assert out["Pericardial effusion"] == 0
    assert out["Emphysema"] == 1
    assert out["Hiatal hernia"] == 0
    assert set(out) == set(CTRATE_FINDINGS)


def test_negation_forms():
    assert lab("Pleural effusion-thickening was not detected.")["Pleural effusion"] == 0
    assert lab("There is no nodular or infiltrative lesion in the lungs.")["Lung nodule"] == 0
    assert lab("Lungs without consolidation.")["Consolidation"] == 0
    assert lab("Kein Pleuraerguss. Keine Konsolidierung.")["Pleural effusion"] == 0
    assert lab("Lunge ohne Rundherd.")["Lung nodule"] == 0
    # negation scope ends at "but": the nodule after it is present
    assert lab("No effusion but a 4 mm nodule in the right lower lobe.")["Lung nodule"] == 1


def test_uncertainty_policy():
    text = "Possible small hiatal hernia."
    assert lab(text)["Hiatal hernia"] == 1
    assert lab(text, uncertain="negative")["Hiatal hernia"] == 0
    assert lab(text, uncertain="unknown")["Hiatal hernia"] == -1
    assert lab("Atelectasis cannot be excluded.", uncertain="unknown")["Atelectasis"] == -1
    with pytest.raises(ValueError):
        RuleLabeler(uncertain="maybe")


def test_resolution_and_history():
    assert lab("The previously seen consolidation has resolved.")["Consolidation"] == 0
    assert lab("Pleural effusion is no longer seen.")["Pleural effusion"] == 0


def test_finding_specific_rules():
    assert lab("Subcutaneous emphysema in the chest wall.")["Emphysema"] == 0
    assert lab("A 12 mm nodule in the right thyroid lobe.")["Lung nodule"] == 0
    out = lab("Calcified atheroma plaques in the aorta and coronary arteries.")
    assert out["Arterial wall calcification"] == 1 and out["Coronary artery wall calcification"] == 1
    out = lab("Calcific plaques in the LAD and the coronary arteries.")
    assert out["Arterial wall calcification"] == 0 and out["Coronary artery wall calcification"] == 1
    assert lab("A port catheter is in the superior vena cava.")["Medical material"] == 1
    assert lab("The findings are consistent with pneumonia.")["Medical material"] == 0
    assert lab("Kardiomegalie. Perikarderguss. Hiatushernie.")["Cardiomegaly"] == 1


def test_new_finding_and_translated_phrasings():
    # absent in the previous examination = new now, while absent in this one stays negated
    text = "A 3 mm nodule, which was not observed in the previous examination, is observed in the right upper lobe."
    assert lab(text)["Lung nodule"] == 1
    assert lab("The nodule described previously was not observed in the current examination.")["Lung nodule"] == 0
    # ground glass stays a lung opacity next to a bone or a fibrotic change; a ground-glass nodule does not
    assert lab("Focal ground-glass density near the osteophyte of the vertebral corpus.")["Lung opacity"] == 1
    assert lab("Fibroatelectatic changes and minimal ground-glass appearance.")["Lung opacity"] == 1
    assert lab("A 4 mm ground glass nodule in the left upper lobe.")["Lung opacity"] == 0
    assert lab("New frosted glass areas in both lungs.")["Lung opacity"] == 1
    assert lab("Dependent densities in the posterior parts of both lungs.")["Lung opacity"] == 1
    assert lab("Pericardial minimal effusion.")["Pericardial effusion"] == 1
    assert lab("Pericardial thickening, left pleural effusion.")["Pericardial effusion"] == 0
    assert lab("Pericardial, pleural effusion was not detected.")["Pericardial effusion"] == 0
    assert lab("Interlobular septal clarification in both lung bases.")["Interlobular septal thickening"] == 1
    assert lab("A 13 mm crazy paving appearance in the right upper lobe.")["Interlobular septal thickening"] == 0
    assert lab("Ground glass densities in a peribronchial distribution.")["Peribronchial thickening"] == 0
    assert lab("There are hypodense nodules.")["Lung nodule"] == 0


def test_sections_and_empty_report():
    res = RuleLabeler().label("Small nodule in the right lower lobe.", "No acute findings.")
    assert res.labels["Lung nodule"] == 1
    assert res.scores["Lung nodule"] == 0.9  # affirmed in findings, impression silent
    res = RuleLabeler().label("Small nodule.", "Nodule.")
    assert res.scores["Lung nodule"] == 1.0
    empty = RuleLabeler().label("", "")
    assert set(empty.labels.values()) == {-1}


def test_manual_labels_macro_f1(real_data):
    """Macro F1 against CT-CLIP's 800 manual labels; the rules were developed on rows 0-399 only."""
    from sklearn.metrics import f1_score

    from radfinder.text.reports import read_ctclip_labeled

    reports, labels = read_ctclip_labeled(real_data / "ct_clip_reports" / "train.csv")
    lab_ = RuleLabeler()
    results = [lab_.label(r.findings, r.impressions).labels for r in reports]
    pred = np.array([[res[f] for f in CTRATE_FINDINGS] for res in results])
    truth = labels[list(CTRATE_FINDINGS)].to_numpy()
    held = slice(400, 800)
    f1_all = f1_score(truth, pred == 1, average="macro")
    f1_held = f1_score(truth[held], pred[held] == 1, average="macro")
    per_finding = f1_score(truth[held], pred[held] == 1, average=None)
    print(f"macro F1 all 800: {f1_all:.3f}, held-out 400: {f1_held:.3f}")
    # measured after the second development round: 0.953 all, 0.948 held-out, weakest held-out finding 0.871 (lung
    # opacity); the first round gave 0.946 / 0.939 / 0.855
    assert f1_all >= 0.945
    assert f1_held >= 0.94
    assert per_finding.min() >= 0.86


def test_synthetic_reports_against_the_generator_labels(synthetic_texts):
    """The synthetic cohort's report writer (EN and DE phrasings) against the labels it planned: per finding F1."""
    from sklearn.metrics import f1_score

    cohort = synthetic_texts
    truth = np.array([st["labels"] for st in cohort])
    lab_ = RuleLabeler()
    fields = {"en": ("Findings_EN", "Impressions_EN"), "de": ("Befund", "Beurteilung")}
    for lang, (fk, ik) in fields.items():
        pred = np.array(
            [[lab_.label(st["texts"][lang][fk], st["texts"][lang][ik]).labels[f] for f in CTRATE_FINDINGS]
             for st in cohort]
        )  # fmt: skip
        f1 = {f: f1_score(truth[:, j], pred[:, j] == 1) for j, f in enumerate(CTRATE_FINDINGS) if truth[:, j].any()}
        assert len(f1) >= 16
        assert np.mean(list(f1.values())) >= 0.98, (lang, f1)
        assert min(f1.values()) >= 0.9, (lang, f1)
