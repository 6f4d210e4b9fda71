"""Linear probe on frozen window features: how much of each finding the cached features carry at all.

A diagnostic for a window encoder, not one of the paper's protocols: each scan becomes the mean and the maximum of
its windows' `cls` features, standardised with the TRAIN scans' statistics, and one L2-regularised logistic
regression per finding is fitted on the train scans and scored (AUROC) on the held-out ones. A contrastive model
trained on the same features rarely does better than this probe, so it tells whether a weak zero-shot figure comes
from the features or from the training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..features import FeatureStore
from .binary import auroc


def scan_vectors(store: FeatureStore, keys: Sequence[str]) -> np.ndarray:
    """(n_scans, 2 * feature_dim): mean and max over the windows of each scan's cls features."""
    rows = []
    for key in keys:
        cls = np.asarray(store.read(key).cls, dtype=np.float64).reshape(-1, store.feature_dim)
        rows.append(np.concatenate([cls.mean(0), cls.max(0)]))
    return np.stack(rows)


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    names: Sequence[str],
    *,
    c: float = 0.1,
) -> dict[str, Any]:
    """Per-finding logistic regression (inverse regularisation `c`) fitted on train, AUROC on test.

    Labels are 0/1 (anything else, e.g. -1 for unknown, is left out of that finding); a finding without both
    classes in train and in test is listed under "skipped"."""
    from sklearn.linear_model import LogisticRegression

    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    tr, te = (train_x - mean) / std, (test_x - mean) / std
    per: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for j, name in enumerate(names):
        ktr, kte = np.isin(train_y[:, j], (0, 1)), np.isin(test_y[:, j], (0, 1))
        ytr, yte = train_y[ktr, j].astype(int), test_y[kte, j].astype(int)
        if len(set(ytr)) < 2 or len(set(yte)) < 2:
            skipped[name] = "one class only in train or test"
            continue
        clf = LogisticRegression(C=c, max_iter=5000).fit(tr[ktr], ytr)
        per[name] = auroc(clf.decision_function(te[kte]), yte)
    return {
        "macro_auroc": float(np.mean(list(per.values()))) if per else None,
        "per_finding_auroc": per,
        "skipped": skipped,
        "n_train": int(len(train_x)),
        "n_test": int(len(test_x)),
        "C": c,
    }
