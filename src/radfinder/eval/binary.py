"""Binary-classification primitives: AUROC, the full ROC curve, the Youden-J operating point and the metrics
of the confusion matrix at a threshold. Written here (not imported from scikit-learn) and tested against it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radfinder.eval._common import EvalInputError
from radfinder.eval.bootstrap import weighted_auroc


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise EvalInputError(f"scores and labels differ in length: {scores.size} vs {labels.size}")
    if not np.all(np.isin(labels, (0, 1))):
        raise EvalInputError("labels must be 0/1 (filter unknown -1 labels first)")
    if not np.all(np.isfinite(scores)):
        raise EvalInputError("scores contain NaN or infinite values")
    return scores, labels.astype(bool)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count 1/2). NaN when only one class is present."""
    scores, labels = _check(scores, labels)
    return float(weighted_auroc(scores, labels, np.ones((1, scores.size)))[0])


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, highest threshold first, starting at (0, 0) with
    threshold +inf. A case is predicted positive when ``score >= threshold``."""
    scores, labels = _check(scores, labels)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    y = labels[order]
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # last index of each tie group (descending)
    tps = np.cumsum(y)[ends].astype(np.float64)
    fps = (ends + 1) - tps
    n_pos, n_neg = tps[-1] if tps.size else 0.0, fps[-1] if fps.size else 0.0
    tps = np.r_[0.0, tps]
    fps = np.r_[0.0, fps]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tps / n_pos if n_pos > 0 else np.full_like(tps, np.nan)
        fpr = fps / n_neg if n_neg > 0 else np.full_like(fps, np.nan)
    return fpr, tpr, np.r_[np.inf, s[ends]]


@dataclass(frozen=True)
class ThresholdMetrics:
    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else 0.0

    @property
    def precision(self) -> float:
        """tp / (tp + fp); 0 when nothing is predicted positive (scikit-learn's zero_division=0)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 0.0

    @property
    def balanced_accuracy(self) -> float:
        return (self.sensitivity + self.specificity) / 2.0

    def to_dict(self) -> dict[str, float]:
        return {
            "threshold": float(self.threshold),
            "f1": self.f1,
            "precision": self.precision,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "balanced_accuracy": self.balanced_accuracy,
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
        }


def threshold_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> ThresholdMetrics:
    """Confusion matrix of ``score >= threshold`` against the labels."""
    scores, labels = _check(scores, labels)
    pred = scores >= threshold
    tp = int(np.sum(pred & labels))
    fp = int(np.sum(pred & ~labels))
    fn = int(np.sum(~pred & labels))
    tn = int(np.sum(~pred & ~labels))
    return ThresholdMetrics(float(threshold), tp, fp, tn, fn)


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Threshold maximising J = sensitivity + specificity - 1 over the ROC curve's thresholds. Ties go to the
    highest threshold (the first maximum, in the curve's descending order). The +inf start point is used only
    when no finite threshold does better (J = 0 everywhere)."""
    fpr, tpr, thr = roc_curve(scores, labels)
    j = tpr - fpr
    if not np.any(np.isfinite(j)):
        raise EvalInputError("Youden threshold needs both classes")
    finite = np.flatnonzero(np.isfinite(thr))
    best = finite[int(np.argmax(j[finite]))]
    return float(thr[best])
