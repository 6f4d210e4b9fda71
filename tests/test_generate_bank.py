"""The generator bank and the report writer on hand-made reports and embeddings (no model): thresholds are
scikit-learn's best-F1 cut on the training scores, sentences come from the training reports, depth grounding picks
the sentence variant matching the scan's cells, a segmentation restricts cells to the finding's anatomy, and a
bank round-trips through JSON with clear errors for bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from radfinder.eval.generation import BankError, GeneratorBank, ReportWriter, ScanOutputs, f1_threshold, fit_bank
from radfinder.eval.generation.sentences import clean_sentence, tag_section
from radfinder.text.findings import CTRATE_FINDINGS
from radfinder.text.labeler import RuleLabeler

NODULE, EFFUSION, CARDIO = "Lung nodule", "Pleural effusion", "Cardiomegaly"
REPORTS = [
    ("Heart size is normal. A 6 mm nodule in the right upper lobe (series 4, image 30). No pleural effusion.",
     "1. Pulmonary nodule, right upper lobe."),
    ("Heart size is normal. A 6 mm nodule in the left lower lobe, see image 80. No pleural effusion.",
     "1. Pulmonary nodule, left lower lobe."),
    ("Cardiomegaly. Trachea and main bronchi are patent. Right pleural effusion. No pulmonary nodules.",
     "1. Cardiomegaly. 2. Pleural effusion on image 55 of series 3."),
    ("Heart size is normal. Trachea and main bronchi are patent. No pleural effusion. No pulmonary nodules.",
     "No acute cardiopulmonary abnormality."),
    ("Heart size is normal. No pleural effusion. No pulmonary nodules.", "No acute cardiopulmonary abnormality."),
]


def _labels(reports):
    lab = RuleLabeler()
    return np.array([[lab.label(f, i).labels[x] for x in CTRATE_FINDINGS] for f, i in reports], np.float32)


def test_macro_f1_of_the_bootstrap_matches_scikit_learn_per_finding():
    from radfinder.eval.report_generation_task import macro_f1

    rng = np.random.default_rng(0)
    ref = rng.choice([-1.0, 0.0, 1.0], size=(40, 6))
    pred = rng.choice([-1.0, 0.0, 1.0], size=(40, 6))
    ref[:, 5] = np.where(ref[:, 5] == 1, 0, ref[:, 5])  # no positive reference: the finding is left out
    want = [f1_score(ref[ref[:, k] >= 0, k] == 1, pred[ref[:, k] >= 0, k] == 1) for k in range(5)]
    assert macro_f1(pred, ref) == pytest.approx(float(np.mean(want)), abs=1e-12)
    assert np.isnan(macro_f1(pred[:, 5:], ref[:, 5:]))

def test_f1_threshold_is_the_best_f1_cut():
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = np.round(rng.random(40), 2)  # ties included
        y = (rng.random(40) < 0.3).astype(int)
        y[rng.random(40) < 0.1] = -1
        cut, best = f1_threshold(s, y)
        keep = y >= 0
        brute = max(f1_score(y[keep] == 1, s[keep] >= t, zero_division=0) for t in np.unique(s[keep]))
        assert best == pytest.approx(brute)
        assert f1_score(y[keep] == 1, s[keep] >= cut) == pytest.approx(brute)
    assert f1_threshold(np.array([0.2, 0.4]), np.array([0, -1])) == (None, 0.0)


def test_sentences_lose_their_slice_references_and_keep_whole_impression_items():
    assert clean_sentence("Mediastinal lymphadenopathy on image 117 of series 2.") == "Mediastinal lymphadenopathy."
    got = clean_sentence("Fibrotic bands, see series 4, image 103, likely sequelae.")
    assert got == "Fibrotic bands, likely sequelae."
    items = tag_section("1. Cardiomegaly. 2. Pleural effusion on image 55 of series 3. 3. No nodule.", "impressions")
    assert [t.text for t in items] == ["Cardiomegaly.", "Pleural effusion.", "No nodule."]
    assert items[0].affirmed == (CARDIO,) and items[2].negated == (NODULE,)


def _bank(min_df=0.5):
    y = _labels(REPORTS)
    k = CTRATE_FINDINGS.index(NODULE)
    scores = np.full(y.shape, 0.4)
    scores[:, k] = [0.9, 0.8, 0.3, 0.2, 0.35]
    return fit_bank(REPORTS, scores, y, min_df=min_df), y


def test_bank_holds_training_sentences_thresholds_and_majority_normal_sentences(tmp_path):
    bank, y = _bank()
    assert bank.thresholds[NODULE] == pytest.approx(0.575)  # between 0.8 (last positive) and 0.35
    assert bank.thresholds["Emphysema"] is None  # no positive training report: never written
    texts = {v["text"] for v in bank.positive[NODULE]}
    assert texts == {"A 6 mm nodule in the right upper lobe.", "A 6 mm nodule in the left lower lobe."}
    assert {v["text"] for v in bank.impression[NODULE]} == {"Pulmonary nodule, right upper lobe.",
                                                            "Pulmonary nodule, left lower lobe."}
    absent = {r["text"]: r for r in bank.absent}
    # "No pleural effusion." is said by 4 of the 4 reports without an effusion; "patent" by 2 of 5 (< 0.5)
    assert absent["No pleural effusion."]["df"] == pytest.approx(1.0)
    assert absent["Heart size is normal."]["df"] == pytest.approx(0.8)
    assert "Trachea and main bronchi are patent." not in absent
    assert bank.normal_impression == "No acute cardiopulmonary abnormality."
    path = bank.save(tmp_path / "bank.json")
    assert GeneratorBank.load(path) == bank
    assert json.loads(path.read_text())["format"] == "radfinder-generator-bank"


def test_bad_bank_files_are_clear_errors(tmp_path):
    with pytest.raises(BankError, match="not found"):
        GeneratorBank.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BankError, match="not a readable JSON"):
        GeneratorBank.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something"}')
    with pytest.raises(BankError, match="not a radfinder generator bank"):
        GeneratorBank.load(tmp_path / "other.json")
    with pytest.raises(BankError, match="must both be"):
        fit_bank(REPORTS, np.zeros((2, 18)), np.zeros((5, 18)))


def _writer(bank):
    """Embeddings: right upper lobe sentences point along e0, left lower lobe along e1, everything else e2."""
    def embed(texts):
        out = np.zeros((len(texts), 3))
        for i, t in enumerate(texts):
            out[i, 0 if "right upper" in t else 1 if "left lower" in t else 2] = 1.0
        return out
    return ReportWriter(bank, embed)


def _probs(bank, **present):
    p = np.zeros(len(bank.findings))
    for f, v in present.items():
        p[bank.findings.index(f)] = v
    return p


def test_writer_grounds_the_sentence_variant_in_the_scan_and_writes_normal_text_for_the_rest():
    bank, _ = _bank()
    w = _writer(bank)
    depth = np.array([[0.0, 0.0, 1.0], [0.3, 1.0, 0.0], [1.0, 0.0, 0.0]])  # cell 2 looks like "right upper"
    rep = w.write(ScanOutputs(_probs(bank, **{NODULE: 0.9}), depth, np.array([True, True, True]),
                              np.array([-10.0, -22.0, -34.0])))
    assert "A 6 mm nodule in the right upper lobe." in rep.findings
    assert "No pleural effusion." in rep.findings and "No pulmonary nodules." not in rep.findings
    assert rep.impression == "1. Pulmonary nodule, right upper lobe."
    (p,) = rep.present
    assert p["finding"] == NODULE and p["cell"] == 2 and p["world_z_mm"] == -34.0
    # the same scan with that cell invalid: the left lower lobe cell wins
    rep = w.write(ScanOutputs(_probs(bank, **{NODULE: 0.9}), depth, np.array([True, True, False])))
    assert "left lower lobe" in rep.findings and rep.present[0]["cell"] == 1
    # below the training threshold: no finding, the normal impression
    rep = w.write(ScanOutputs(_probs(bank, **{NODULE: 0.5}), depth, np.ones(3, bool)))
    assert rep.present == [] and rep.impression == bank.normal_impression
    assert "No pulmonary nodules." in rep.findings and RuleLabeler().label(rep.findings).labels[NODULE] == 0
    with pytest.raises(BankError, match="probabilities"):
        w.write(ScanOutputs(np.zeros(3), depth, np.ones(3, bool)))
    with pytest.raises(BankError, match="no valid depth cell"):
        w.write(ScanOutputs(_probs(bank), depth, np.zeros(3, bool)))


def test_a_segmentation_keeps_a_finding_in_cells_holding_its_anatomy():
    bank, _ = _bank()
    w = _writer(bank)
    depth = np.array([[1.0, 0.0, 0.0], [0.2, 1.0, 0.0], [0.0, 0.0, 1.0]])
    classes = [{"lung": []}, {"lung": ["lung_lower_lobe_left"]}, {"lung": ["lung_upper_lobe_right"]}]
    rep = w.write(ScanOutputs(_probs(bank, **{NODULE: 0.9}), depth, np.ones(3, bool), None, classes))
    (p,) = rep.present
    assert p["cell"] == 1 and p["classes_in_cell"] == ["lung_lower_lobe_left"] and p["anatomy"] == "lung"
    assert "left lower lobe" in rep.findings


def test_generated_text_states_what_the_labeler_reads_back():
    bank, _ = _bank(min_df=0.2)
    w = _writer(bank)
    rep = w.write(ScanOutputs(_probs(bank, **{CARDIO: 0.9, EFFUSION: 0.9}), np.eye(3), np.ones(3, bool)))
    got = RuleLabeler().label(rep.findings, rep.impression).labels
    assert got[CARDIO] == 1 and got[EFFUSION] == 1 and got[NODULE] == 0
    # the training reports with cardiomegaly never say the heart is normal: neither does the generated one
    assert "Heart size is normal." not in rep.findings
    assert CARDIO in {r["text"]: r for r in bank.absent}["Heart size is normal."]["excluded_by"]
    assert rep.impression.startswith("1. ") and "2. " in rep.impression


def test_paired_bootstrap_point_differences_are_the_metrics_differences():
    from radfinder.eval.report_generation import clinical_efficacy, rouge_l
    from radfinder.eval.report_generation_task import paired_bootstrap

    refs = [f + " " + i for f, i in REPORTS]
    a = ["Cardiomegaly. A nodule in the right upper lobe.", "No pleural effusion.", "Right pleural effusion.",
         "Heart size is normal.", "No pulmonary nodules."]
    b = ["Heart size is normal."] * 5
    got = paired_bootstrap(a, b, refs, n_boot=200)
    assert got["rouge_l"]["difference"] == pytest.approx(rouge_l(a, refs) - rouge_l(b, refs))
    ce = clinical_efficacy(a, refs)["ce_macro_f1"] - clinical_efficacy(b, refs)["ce_macro_f1"]
    assert got["ce_macro_f1"]["difference"] == pytest.approx(ce)
    lo, hi = got["rouge_l"]["ci95"]
    assert lo <= got["rouge_l"]["difference"] <= hi
    same = paired_bootstrap(a, a, refs, n_boot=50)
    assert same["rouge_l"]["ci95"] == [0.0, 0.0] and same["ce_macro_f1"]["difference"] == 0.0


def test_paired_bootstrap_ci_is_the_percentile_of_clinical_efficacy_over_the_same_resamples():
    """The CE interval recomputed with the tested `clinical_efficacy` on the resamples the protocol defines (seeded
    `integers(0, n, n)` per draw, the same rows for a and b)."""
    from radfinder.eval.report_generation import clinical_efficacy
    from radfinder.eval.report_generation_task import paired_bootstrap

    refs = [f + " " + i for f, i in REPORTS] + ["No acute findings. Lungs are clear."]
    a = ["Cardiomegaly. A nodule in the right upper lobe.", "No pleural effusion.", "Right pleural effusion.",
         "Heart size is normal.", "No pulmonary nodules.", "Cardiomegaly."]
    b = ["Heart size is normal.", "Cardiomegaly.", "Cardiomegaly.", "Small pleural effusion.", "Lung nodule.",
         "No acute findings."]
    got = paired_bootstrap(a, b, refs, n_boot=40, seed=3)["ce_macro_f1"]
    rng = np.random.default_rng(3)
    d = []
    for _ in range(40):
        i = rng.integers(0, len(refs), len(refs))
        pick = lambda xs, i=i: [xs[j] for j in i]  # noqa: E731
        d.append(clinical_efficacy(pick(a), pick(refs))["ce_macro_f1"]
                 - clinical_efficacy(pick(b), pick(refs))["ce_macro_f1"])
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    assert len(d) > 30 and np.ptp(d) > 0
    assert got["ci95"] == pytest.approx(list(np.percentile(d, [2.5, 97.5])), abs=1e-12)
    assert got["p_not_above_zero"] == pytest.approx(float((d <= 0).mean()))
