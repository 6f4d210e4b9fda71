"""Localization metrics and baselines on a hand-computed example."""

from __future__ import annotations

import numpy as np
import pytest

from radfinder.eval._common import EvalInputError
from radfinder.eval.localization import localization_metrics

SCORES = [
    np.array([0.1, 0.9, 0.3, 0.2]),  # true 1 -> pred 1, error 0
    np.array([0.5, 0.1, 0.2, 0.1, 0.0]),  # true 3 -> pred 0, error 3 cells = 36 mm
    np.array([0.2, 0.2, 0.1]),  # true 2 -> tie at 0 and 1 -> first max 0, error 24 mm
]
TRUE = [1, 3, 2]
SCANS = ["a", "a", "b"]


def test_model_metrics_by_hand():
    r = localization_metrics(SCORES, TRUE, SCANS)
    np.testing.assert_array_equal(r.pred_cells, [1, 0, 0])
    m = r.metrics["model"]
    assert m["mae_mm"] == pytest.approx(20.0)
    assert m["median_mm"] == pytest.approx(24.0)
    assert m["acc_exact"] == pytest.approx(1 / 3)
    assert m["acc_within_12mm"] == pytest.approx(1 / 3)
    assert m["acc_within_24mm"] == pytest.approx(2 / 3)
    assert m["per_scan_mae_mm"] == pytest.approx((18.0 + 24.0) / 2)
    assert r.n_snippets == 3 and r.n_scans == 2


def test_baselines_by_hand():
    r = localization_metrics(SCORES, TRUE, SCANS)
    mid = r.metrics["middle"]  # middle cells 2, 2, 1 -> every error one cell
    assert mid["mae_mm"] == pytest.approx(12.0) and mid["acc_exact"] == 0.0 and mid["acc_within_12mm"] == 1.0
    ex = r.metrics["random_expected"]
    assert ex["mae_mm"] == pytest.approx((12.0 + 16.8 + 12.0) / 3)
    assert ex["acc_exact"] == pytest.approx((1 / 4 + 1 / 5 + 1 / 3) / 3)
    assert ex["acc_within_12mm"] == pytest.approx((3 / 4 + 3 / 5 + 2 / 3) / 3)
    assert ex["acc_within_24mm"] == pytest.approx((1 + 4 / 5 + 1) / 3)
    assert ex["per_scan_mae_mm"] == pytest.approx(((12.0 + 16.8) / 2 + 12.0) / 2)
    assert ex["median_mm"] is None


def test_random_sample_is_seeded_and_unbiased():
    rng = np.random.default_rng(0)
    n = 3000
    sizes = rng.integers(5, 30, size=n)
    scores = [rng.normal(size=s) for s in sizes]
    true = [int(rng.integers(s)) for s in sizes]
    a = localization_metrics(scores, true, seed=3)
    b = localization_metrics(scores, true, seed=3)
    np.testing.assert_array_equal(a.errors_mm["random_sample"], b.errors_mm["random_sample"])
    # the sampled baseline agrees with the exact expectation up to sampling noise
    assert a.metrics["random_sample"]["mae_mm"] == pytest.approx(a.metrics["random_expected"]["mae_mm"], rel=0.05)


def test_padded_array_with_mask_equals_list_input():
    pad = np.full((3, 7), np.nan)
    valid = np.zeros((3, 7), bool)
    for i, s in enumerate(SCORES):  # place the valid cells at offset 2 (e.g. the scan starts at cell 2)
        pad[i, 2 : 2 + s.size] = s
        valid[i, 2 : 2 + s.size] = True
    pad[0, 0] = 99.0  # high score on an invalid cell must be ignored
    r = localization_metrics(pad, np.array(TRUE) + 2, SCANS, valid=valid)
    ref = localization_metrics(SCORES, TRUE, SCANS)
    np.testing.assert_array_equal(r.pred_cells, ref.pred_cells + 2)
    for method in ("model", "middle", "random_expected"):
        assert r.metrics[method] == pytest.approx(ref.metrics[method])


def test_errors_from_cell_centres_with_true_depth():
    # cell c spans [12c, 12c + 12) mm; predicted cells 1, 0, 0 have centres 18, 6, 6 mm
    r = localization_metrics(SCORES, TRUE, SCANS, true_depth_mm=[20.0, 40.0, 30.0])
    np.testing.assert_allclose(r.errors_mm["model"], [2.0, 34.0, 24.0])
    assert r.metrics["model"]["acc_within_24mm"] == pytest.approx(2 / 3)


def test_bad_inputs():
    with pytest.raises(EvalInputError):
        localization_metrics(SCORES, [1, 3], SCANS)
    with pytest.raises(EvalInputError):
        localization_metrics(SCORES, [1, 3, 5], SCANS)  # true cell outside the valid cells
    with pytest.raises(EvalInputError):
        localization_metrics([np.array([np.nan])], [0])
