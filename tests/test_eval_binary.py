"""Binary metrics and bootstrap primitives against scikit-learn / numpy on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from radfinder.eval._common import EvalInputError
from radfinder.eval.binary import auroc, roc_curve, threshold_metrics, youden_threshold
from radfinder.eval.bootstrap import (
    AurocPlan,
    bootstrap_counts,
    percentile_ci,
    weighted_auroc,
    weighted_median,
)


def _data(n=300, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    s = y * 0.8 + rng.normal(size=n)
    if ties:
        s = np.round(s, 1)
    return s, y


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_and_roc_curve_match_sklearn(ties):
    s, y = _data(ties=ties)
    assert auroc(s, y) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(s, y)
    fpr_r, tpr_r, thr_r = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, fpr_r)
    np.testing.assert_allclose(tpr, tpr_r)
    np.testing.assert_allclose(thr[1:], thr_r[1:])
    assert np.isinf(thr[0])


def test_auroc_single_class_is_nan():
    assert np.isnan(auroc([0.1, 0.5], [1, 1]))
    with pytest.raises(EvalInputError):
        auroc([0.1, 0.5], [1, -1])


def test_youden_threshold_and_threshold_metrics_match_sklearn():
    s, y = _data(ties=True, seed=3)
    thr = youden_threshold(s, y)
    fpr_r, tpr_r, thr_r = skm.roc_curve(y, s, drop_intermediate=False)
    j = tpr_r - fpr_r
    assert thr == pytest.approx(thr_r[int(np.argmax(j))])
    m = threshold_metrics(s, y, thr)
    pred = (s >= thr).astype(int)
    assert m.f1 == pytest.approx(skm.f1_score(y, pred))
    assert m.precision == pytest.approx(skm.precision_score(y, pred))
    assert m.sensitivity == pytest.approx(skm.recall_score(y, pred))
    assert m.specificity == pytest.approx(skm.recall_score(1 - y, 1 - pred))
    assert m.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(y, pred))
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (m.tp, m.fp, m.tn, m.fn) == (tp, fp, tn, fn)


def test_weighted_auroc_equals_sklearn_with_sample_weight():
    s, y = _data(n=80, ties=True, seed=5)
    rng = np.random.default_rng(1)
    w = rng.integers(0, 4, size=(6, s.size))
    got = weighted_auroc(s, y, w)
    want = [skm.roc_auc_score(y, s, sample_weight=row) for row in w]
    np.testing.assert_allclose(got, want, atol=1e-12)
    # a weighting that removes every positive gives NaN
    w0 = np.ones((1, s.size), dtype=int)
    w0[0, y == 1] = 0
    assert np.isnan(AurocPlan(s, y)(w0)[0])


def test_weighted_median_matches_numpy_of_expanded_sample():
    rng = np.random.default_rng(2)
    v = rng.integers(1, 50, size=31)
    for w in next(bootstrap_counts(31, 40, seed=4)):
        assert weighted_median(v, w[None])[0] == np.median(np.repeat(v, w))


def test_bootstrap_counts_are_resamples_and_deterministic():
    a = np.concatenate(list(bootstrap_counts(17, 1203, seed=9)))
    b = np.concatenate(list(bootstrap_counts(17, 1203, seed=9)))
    c = np.concatenate(list(bootstrap_counts(17, 1203, seed=10)))
    assert a.shape == (1203, 17)
    assert np.all(a.sum(axis=1) == 17)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_percentile_ci_ignores_nan_and_matches_numpy():
    x = np.r_[np.arange(100.0), np.nan]
    assert percentile_ci(x, 0.9) == pytest.approx(tuple(np.percentile(np.arange(100.0), [5, 95])))
    assert all(np.isnan(percentile_ci([np.nan])))
