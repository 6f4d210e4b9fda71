"""Per-finding classification, mean7 zero-shot scoring and the Rad-ChestCT standard protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from radfinder.eval._common import EvalInputError
from radfinder.eval.classification import evaluate_scores, interp_roc, macro_roc_curve
from radfinder.eval.radchestct import (
    RADCHESTCT_STANDARD_FINDINGS,
    RADCHESTCT_TO_CTRATE18,
    evaluate_radchestct_standard,
    radchestct_standard_scores,
    radchestct_to_ctrate18,
)
from radfinder.eval.zero_shot import (
    MEAN7_TEMPLATES,
    evaluate_zero_shot,
    mean7_prompts,
    mean_prompt_embeddings,
    zero_shot_probabilities,
)
from radfinder.text.findings import CTRATE_FINDINGS


def _labels_scores(n=200, f=4, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, f)) < 0.3).astype(int)
    s = y * np.linspace(0.3, 1.5, f) + rng.normal(size=(n, f))
    y[rng.random((n, f)) < 0.1] = -1
    y[:, -1] = np.where(y[:, -1] == -1, -1, 0)  # last finding: negatives and unknowns only
    return s, y


def test_evaluate_scores_matches_sklearn_per_finding():
    s, y = _labels_scores()
    res = evaluate_scores(s, y, ["a", "b", "c", "d"], n_boot=500, seed=1)
    assert list(res.findings) == ["a", "b", "c"]
    assert "d" in res.skipped and "single class" in res.skipped["d"]
    for j, name in enumerate("abc"):
        known = y[:, j] >= 0
        m = res.findings[name]
        assert m.n == known.sum() and m.n_pos == y[known, j].sum()
        assert m.auroc == pytest.approx(skm.roc_auc_score(y[known, j], s[known, j]))
        pred = (s[known, j] >= m.youden.threshold).astype(int)
        assert m.youden.f1 == pytest.approx(skm.f1_score(y[known, j], pred))
        assert m.youden.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(y[known, j], pred))
        lo, hi = m.auroc_ci
        assert lo <= m.auroc <= hi
    assert res.macro_auroc == pytest.approx(np.mean([res.findings[n].auroc for n in "abc"]))
    lo, hi = res.macro_auroc_ci
    assert lo <= res.macro_auroc <= hi and lo < hi
    again = evaluate_scores(s, y, ["a", "b", "c", "d"], n_boot=500, seed=1)
    assert again.macro_auroc_ci == res.macro_auroc_ci
    d = res.to_dict()
    assert d["n_findings"] == 3 and d["per_finding"]["a"]["youden"]["f1"] == pytest.approx(res.findings["a"].youden.f1)


def test_evaluate_scores_rejects_bad_input():
    with pytest.raises(EvalInputError):
        evaluate_scores(np.zeros((3, 2)), np.array([[0, 1], [1, 2], [0, 0]]))
    with pytest.raises(EvalInputError):
        evaluate_scores(np.zeros((3, 1)), np.zeros((3, 1)))  # nothing evaluable


def test_macro_roc_curve_interpolation():
    fpr, tpr = np.array([0, 0, 0.5, 1.0]), np.array([0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(interp_roc(fpr, tpr, np.array([0.0, 0.25, 0.5, 0.75])), [0.5, 0.75, 1.0, 1.0])
    s, y = _labels_scores()
    res = evaluate_scores(s, y, n_boot=0)
    grid, macro = macro_roc_curve(res)
    assert np.all(np.diff(macro) >= -1e-12) and macro[-1] == pytest.approx(1.0)
    # trapezoid area of the macro curve is close to the macro AUROC
    assert np.trapezoid(macro, grid) == pytest.approx(res.macro_auroc, abs=0.01)


def test_zero_shot_softmax_and_mean7_by_hand():
    img = np.array([[1.0, 0.0], [0.0, 2.0]])
    pos = np.array([[[1.0, 0.0], [1.0, 0.0]]])  # one finding, 2 templates, already averaged direction (1, 0)
    neg = np.array([[[0.0, 3.0], [0.0, 1.0]]])
    p = zero_shot_probabilities(img, pos, neg)
    e = np.exp
    np.testing.assert_allclose(p[:, 0], [e(1) / (e(1) + e(0)), e(0) / (e(0) + e(1))])
    # mean7: normalise, average, renormalise
    emb = np.array([[[2.0, 0.0], [0.0, 5.0]]])
    np.testing.assert_allclose(mean_prompt_embeddings(emb), [[np.sqrt(0.5), np.sqrt(0.5)]])
    pos_txt, neg_txt = mean7_prompts("Lung nodule")
    assert len(MEAN7_TEMPLATES) == 7 and pos_txt[6] == "Lung nodule is present." and neg_txt[0] == "No Lung nodule."


def test_evaluate_zero_shot_end_to_end_matches_sklearn():
    rng = np.random.default_rng(5)
    n, f, d = 120, 3, 16
    y = (rng.random((n, f)) < 0.4).astype(int)
    dirs = rng.normal(size=(f, d))
    img = rng.normal(size=(n, d)) + y @ dirs
    pos = dirs[:, None] + 0.3 * rng.normal(size=(f, 7, d))
    neg = -dirs[:, None] + 0.3 * rng.normal(size=(f, 7, d))
    res = evaluate_zero_shot(img, pos, neg, y, ["x", "y", "z"], n_boot=0)

    def unit(v):
        return v / np.linalg.norm(v)

    for j, name in enumerate("xyz"):  # the mean7 rule written out per case, not the function under test
        mp = unit(np.mean([unit(v) for v in pos[j]], axis=0))
        mn = unit(np.mean([unit(v) for v in neg[j]], axis=0))
        probs = [np.exp(unit(x) @ mp) / (np.exp(unit(x) @ mp) + np.exp(unit(x) @ mn)) for x in img]
        assert res.findings[name].auroc == pytest.approx(skm.roc_auc_score(y[:, j], probs))
        assert res.findings[name].auroc > 0.8


def test_radchestct_mapping_or_over_locations():
    cols = [
        "NoteAcc_DEID",
        "nodule*right_lung",
        "nodulegr1cm*left_lung",
        "calcification*aorta",
        "stent*heart",
        "opacity*left_lung",
        "cardiomegaly*heart",
    ]
    vals = np.array(
        [
            ["a", 0, 1, 0, 0, 0, 1],
            ["b", 0, 0, 1, 1, 0, 0],
            ["c", 0, 0, 0, 0, 1, 0],
        ],
        dtype=object,
    )
    labels, missing = radchestct_to_ctrate18(pd.DataFrame(vals, columns=cols))
    col = {f: i for i, f in enumerate(CTRATE_FINDINGS)}
    np.testing.assert_array_equal(labels[:, col["Lung nodule"]], [1, 0, 0])
    np.testing.assert_array_equal(labels[:, col["Arterial wall calcification"]], [0, 1, 0])
    np.testing.assert_array_equal(labels[:, col["Coronary artery wall calcification"]], [0, 1, 0])
    np.testing.assert_array_equal(labels[:, col["Medical material"]], [0, 1, 0])
    np.testing.assert_array_equal(labels[:, col["Lung opacity"]], [0, 0, 1])
    np.testing.assert_array_equal(labels[:, col["Cardiomegaly"]], [1, 0, 0])
    assert np.all(labels[:, col["Mosaic attenuation pattern"]] == -1)  # no mapped column
    assert np.all(labels[:, col["Emphysema"]] == -1)  # mapped, but absent from these columns
    assert missing["Emphysema"] == ["emphysema"] and "pacemaker_or_defib" in missing["Medical material"]
    assert RADCHESTCT_TO_CTRATE18["Mosaic attenuation pattern"] == ()


def test_radchestct_standard_protocol():
    assert len(RADCHESTCT_STANDARD_FINDINGS) == 16
    assert "Coronary artery wall calcification" not in RADCHESTCT_STANDARD_FINDINGS
    assert "Mosaic attenuation pattern" not in RADCHESTCT_STANDARD_FINDINGS
    rng = np.random.default_rng(6)
    n = 150
    scores = rng.random((n, 18))
    labels = (rng.random((n, 18)) < 0.3).astype(int)
    labels[:, 13] = -1
    std = radchestct_standard_scores(scores)
    a, c = (
        CTRATE_FINDINGS.index("Arterial wall calcification"),
        CTRATE_FINDINGS.index("Coronary artery wall calcification"),
    )
    assert std.shape == (n, 16)
    np.testing.assert_allclose(
        std[:, RADCHESTCT_STANDARD_FINDINGS.index("Arterial wall calcification")],
        np.maximum(scores[:, a], scores[:, c]),
    )
    res = evaluate_radchestct_standard(scores, labels, n_boot=0)
    assert list(res.findings) == list(RADCHESTCT_STANDARD_FINDINGS)
    keep = [CTRATE_FINDINGS.index(f) for f in RADCHESTCT_STANDARD_FINDINGS]
    want = [skm.roc_auc_score(labels[:, j], std[:, i]) for i, j in enumerate(keep)]
    assert res.macro_auroc == pytest.approx(np.mean(want))
