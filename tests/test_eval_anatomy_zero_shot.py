"""Anatomy-level zero-shot evaluation (fVLM): prompts, the finding -> anatomy mapping, probabilities and per-finding
/ macro AUROC against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from radfinder.eval._common import EvalInputError
from radfinder.eval.anatomy_zero_shot import (
    ANATOMIES,
    anatomy_prompts,
    anatomy_zero_shot_probabilities,
    evaluate_anatomy_zero_shot,
    unmapped_findings,
)
from radfinder.text.findings import CTRATE_FINDINGS

# fVLM's released evaluation (eval.py of its CT-RATE code), finding -> (anatomy, positive prompt), transcribed by
# hand from the release; every negative is "Not " + the positive.
RELEASED = {
    "Emphysema": ("lung", "Emphysema."), "Atelectasis": ("lung", "Atelectatic."), "Lung nodule": ("lung", "Nodule."),
    "Lung opacity": ("lung", "Opacity."), "Pulmonary fibrotic sequela": ("lung", "Pulmonary fibrotic sequela."),
    "Pleural effusion": ("lung", "Pleural effusion."),
    "Mosaic attenuation pattern": ("lung", "Mosaic attenuation pattern."),
    "Peribronchial thickening": ("lung", "Peribronchial thickening."), "Consolidation": ("lung", "Consolidation."),
    "Bronchiectasis": ("lung", "Bronchiectasis."),
    "Interlobular septal thickening": ("lung", "Interlobular septal thickening."),
    "Cardiomegaly": ("heart", "Cardiomegaly."), "Pericardial effusion": ("heart", "Pericardial effusion."),
    "Coronary artery wall calcification": ("heart", "Coronary artery wall calcification."),
    "Hiatal hernia": ("esophagus", "Hiatal hernia."),
    "Arterial wall calcification": ("aorta", "Arterial wall calcification."),
}


def test_prompts_and_mapping_are_the_released_ones():
    prompts = anatomy_prompts()
    assert len(prompts) == 16
    assert unmapped_findings() == ["Medical material", "Lymphadenopathy"]
    got = {p.finding: (p.anatomy, p.positive) for p in prompts}
    assert got == RELEASED
    assert all(p.negative == "Not " + p.positive for p in prompts)
    assert [p.finding for p in prompts] == [f for f in CTRATE_FINDINGS if f in RELEASED]  # in CT-RATE order
    assert {p.anatomy for p in prompts} == set(ANATOMIES)


def _data(n=120, d=8, seed=0):
    rng = np.random.default_rng(seed)
    prompts = anatomy_prompts()
    f = len(prompts)
    pos = rng.normal(size=(f, d))
    neg = rng.normal(size=(f, d))
    labels = (rng.random((n, len(CTRATE_FINDINGS))) < 0.3).astype(int)
    labels[rng.random(labels.shape) < 0.05] = -1
    img = rng.normal(size=(n, len(ANATOMIES), d))
    a_idx = [ANATOMIES.index(p.anatomy) for p in prompts]
    cols = [CTRATE_FINDINGS.index(p.finding) for p in prompts]
    for k, (a, c) in enumerate(zip(a_idx, cols, strict=True)):  # plant a signal for each finding in its anatomy
        img[:, a] += 0.6 * np.outer(labels[:, c] == 1, pos[k] - neg[k])
    valid = rng.random((n, len(ANATOMIES))) < 0.9
    return img, pos, neg, labels, valid, a_idx, cols


def test_probabilities_are_the_softmax_over_the_pair():
    img, pos, neg, _, _, a_idx, _ = _data()
    p = anatomy_zero_shot_probabilities(img, pos, neg, a_idx, temperature=0.5)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    for k, a in enumerate(a_idx):
        logits = np.stack([unit(img[:, a]) @ unit(neg[k]), unit(img[:, a]) @ unit(pos[k])], 1) / 0.5
        soft = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        np.testing.assert_allclose(p[:, k], soft[:, 1], rtol=1e-12)


def test_auroc_per_finding_and_macro_against_sklearn():
    img, pos, neg, labels, valid, a_idx, cols = _data()
    res = evaluate_anatomy_zero_shot(img, pos, neg, labels, valid=valid, n_boot=0)
    probs = anatomy_zero_shot_probabilities(img, pos, neg, a_idx)
    expect = {}
    for k, (a, c) in enumerate(zip(a_idx, cols, strict=True)):
        keep = valid[:, a] & (labels[:, c] >= 0)
        expect[CTRATE_FINDINGS[c]] = roc_auc_score(labels[keep, c], probs[keep, k])
        assert res.classification.findings[CTRATE_FINDINGS[c]].n == int(keep.sum())
    got = res.per_finding_auroc()
    assert set(got) == set(expect)
    for name, v in expect.items():
        assert got[name] == pytest.approx(v, abs=1e-12)
    assert res.macro_auroc == pytest.approx(np.mean(list(expect.values())), abs=1e-12)
    assert res.macro_auroc > 0.75  # the planted signal is found
    d = res.to_dict()
    assert d["unmapped"] == ["Medical material", "Lymphadenopathy"] and d["anatomy_of"]["Emphysema"] == "lung"
    # temperature does not change AUROC
    res2 = evaluate_anatomy_zero_shot(img, pos, neg, labels, valid=valid, n_boot=0, temperature=0.07)
    assert res2.macro_auroc == pytest.approx(res.macro_auroc, abs=1e-12)


def test_cut_anatomies_are_scored_and_uncut_leaves_them_out():
    """valid = the anatomy has voxels, cut = the crop cuts it: the headline AUROC keeps the cut studies, `uncut`
    drops them; both against scikit-learn on the matching rows."""
    img, pos, neg, labels, valid, a_idx, cols = _data(n=160, seed=3)
    cut = np.random.default_rng(9).random(valid.shape) < 0.3
    res = evaluate_anatomy_zero_shot(img, pos, neg, labels, valid=valid, cut=cut, n_boot=0)
    probs = anatomy_zero_shot_probabilities(img, pos, neg, a_idx)
    for k, (a, c) in enumerate(zip(a_idx, cols, strict=True)):
        name = CTRATE_FINDINGS[c]
        scored = valid[:, a] & (labels[:, c] >= 0)
        uncut = scored & ~cut[:, a]
        assert res.classification.findings[name].n == int(scored.sum())
        assert res.uncut.findings[name].n == int(uncut.sum()) < int(scored.sum())
        assert res.per_finding_auroc()[name] == pytest.approx(roc_auc_score(labels[scored, c], probs[scored, k]))
        assert res.uncut.findings[name].auroc == pytest.approx(roc_auc_score(labels[uncut, c], probs[uncut, k]))
    d = res.to_dict()
    assert d["uncut"]["macro_auroc"] == pytest.approx(res.uncut.macro_auroc)
    assert d["macro_auroc"] == pytest.approx(res.macro_auroc) and res.uncut.macro_auroc != res.macro_auroc
    # without cut flags there is no uncut figure; cut must be (N, A)
    assert evaluate_anatomy_zero_shot(img, pos, neg, labels, valid=valid, n_boot=0).uncut is None
    with pytest.raises(EvalInputError, match="cut"):
        evaluate_anatomy_zero_shot(img, pos, neg, labels, valid=valid, cut=cut[:, :2], n_boot=0)


def test_bad_inputs():
    img, pos, neg, labels, _, a_idx, _ = _data()
    with pytest.raises(EvalInputError):
        evaluate_anatomy_zero_shot(img, pos, neg, labels[:, :5], n_boot=0)
    with pytest.raises(EvalInputError, match="anatomies"):
        evaluate_anatomy_zero_shot(img[:, :2], pos, neg, labels, anatomies=("lung", "heart"), n_boot=0)
    with pytest.raises(EvalInputError):
        anatomy_zero_shot_probabilities(img, pos, neg[:3], a_idx)
