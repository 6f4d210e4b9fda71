"""Paired bootstrap of a metric difference (`eval.paired`) against a plain NumPy loop over the same resamples, and
the per-case arrays an evaluation leaves for it."""

from __future__ import annotations

import numpy as np
import pytest

from radfinder.eval.bootstrap import bootstrap_counts
from radfinder.eval.paired import (
    macro_auroc_statistic,
    mean_statistic,
    median_statistic,
    paired_deltas,
    paired_difference,
)


def _auroc(s, y):
    """Mann-Whitney AUROC by counting pairs (ties 1/2)."""
    pos, neg = s[y == 1], s[y == 0]
    if not len(pos) or not len(neg):
        return np.nan
    return ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))


def _macro(s, y, kept):
    vals = []
    for j in kept:
        k = y[:, j] >= 0
        vals.append(_auroc(s[k, j], y[k, j]))
    vals = np.array(vals)
    return np.nanmean(vals) if np.isfinite(vals).any() else np.nan


def test_paired_bootstrap_matches_a_numpy_loop_over_the_same_resampled_studies():
    rng = np.random.default_rng(3)
    n, f, n_boot = 40, 4, 300
    y = rng.integers(0, 2, (n, f)).astype(float)
    y[rng.random((n, f)) < 0.1] = -1
    y[:, 3] = 0  # a finding with one class only: left out of the macro mean, as in evaluate_scores
    sa = y + rng.normal(0, 1.0, (n, f))
    sb = rng.normal(0, 1.0, (n, f)).round(1)  # ties
    ranks_a, ranks_b = rng.integers(1, 30, n), rng.integers(1, 30, n)
    snip_study = rng.integers(0, n, 70)  # snippets of the studies (several per study, some with none)
    err_a, err_b = rng.gamma(2, 10, 70), rng.gamma(2, 12, 70)

    kept = [0, 1, 2]
    cases = {
        "auroc": (macro_auroc_statistic(sa, y), macro_auroc_statistic(sb, y),
                  lambda i: _macro(sa[i], y[i], kept) - _macro(sb[i], y[i], kept)),
        "r10": (mean_statistic(ranks_a <= 10), mean_statistic(ranks_b <= 10),
                lambda i: np.mean(ranks_a[i] <= 10) - np.mean(ranks_b[i] <= 10)),
        "median": (median_statistic(ranks_a), median_statistic(ranks_b),
                   lambda i: np.median(ranks_a[i]) - np.median(ranks_b[i])),
        "mae": (mean_statistic(err_a, snip_study), mean_statistic(err_b, snip_study),
                lambda i: (np.mean(np.concatenate([err_a[snip_study == s] for s in i]))
                           - np.mean(np.concatenate([err_b[snip_study == s] for s in i])))),
    }  # fmt: skip
    # the loop draws the very resamples bootstrap_counts draws: each count vector expanded to study indices
    resamples = [np.repeat(np.arange(n), c) for w in bootstrap_counts(n, n_boot, 7) for c in w]
    for name, (a, b, loop) in cases.items():
        got = paired_difference(a, b, n, n_boot=n_boot, seed=7)
        assert got["difference"] == pytest.approx(loop(np.arange(n)), abs=1e-12), name
        diffs = np.array([loop(i) for i in resamples])
        diffs = diffs[np.isfinite(diffs)]
        want = np.percentile(diffs, [2.5, 97.5])
        np.testing.assert_allclose(got["ci95"], want, atol=1e-12, err_msg=name)
        assert got["p_not_above_zero"] == pytest.approx(np.mean(diffs <= 0)), name


def test_pairing_narrows_the_interval_of_a_shared_signal():
    """Two models that err on the same studies: the paired CI of their difference is far narrower than the
    spread of either metric alone (what lets a comparison on ~120 studies separate methods)."""
    rng = np.random.default_rng(0)
    base = rng.gamma(2, 15, 120)
    a, b = base, base + 2.0 + rng.normal(0, 1, 120)
    d = paired_difference(mean_statistic(b), mean_statistic(a), 120, n_boot=2000, seed=0)
    alone = paired_difference(mean_statistic(b), lambda w: np.zeros(len(np.atleast_2d(w))), 120, n_boot=2000)
    assert d["ci95"][0] > 0 and (d["ci95"][1] - d["ci95"][0]) < 0.2 * (alone["ci95"][1] - alone["ci95"][0])


def test_paired_deltas_cover_shared_metrics_only_and_need_the_same_studies():
    from radfinder.eval._common import EvalInputError

    keys = np.array(["s0", "s1", "s2", "s3"])
    a = {"keys": keys, "t2v_ranks": np.array([1, 3, 12, 2]), "t2v_study": np.arange(4),
         "loc_errors_mm": np.array([5.0, 7.0, 9.0]), "loc_study": np.array([0, 0, 2])}
    b = {"keys": keys, "t2v_ranks": np.array([2, 11, 12, 1]), "t2v_study": np.arange(4)}
    out = paired_deltas(a, b, n_boot=50)
    assert set(out) == {"retrieval"} and set(out["retrieval"]) == {"R@1", "R@5", "R@10", "median_rank"}
    assert out["retrieval"]["R@10"]["difference"] == pytest.approx(3 / 4 - 2 / 4)
    with pytest.raises(EvalInputError, match="different studies"):
        paired_deltas(a, {**b, "keys": keys[::-1]}, n_boot=10)
