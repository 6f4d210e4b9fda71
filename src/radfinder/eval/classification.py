"""Multi-label binary classification from arbitrary per-finding scores.

`evaluate_scores(scores, labels, names)` is scorer-agnostic: zero-shot prompt scores, a rule-based text
scorer or a linear probe are all evaluated the same way. Per finding: AUROC (with a bootstrap CI), the ROC
curve, and the metrics at the Youden-J threshold (F1, precision, sensitivity, specificity, balanced accuracy).
Labels of -1 (unknown) are excluded for that finding only. Findings whose remaining labels hold a single class
are skipped and listed with the reason. Macro values are plain means over the evaluated findings.

Bootstrap: cases (rows) are resampled jointly for all findings (paired), 10,000 times by default; the macro
AUROC of a resample is the mean over the findings that still have both classes in it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radfinder.eval._common import EvalInputError, as_numpy, ci_dict, clean_number
from radfinder.eval.binary import ThresholdMetrics, auroc, roc_curve, threshold_metrics, youden_threshold
from radfinder.eval.bootstrap import DEFAULT_N_BOOT, AurocPlan, bootstrap_counts, percentile_ci

THRESHOLD_METRICS = ("f1", "precision", "sensitivity", "specificity", "balanced_accuracy")


@dataclass
class FindingMetrics:
    name: str
    n: int
    n_pos: int
    n_neg: int
    auroc: float
    youden: ThresholdMetrics
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    auroc_ci: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
            "auroc": clean_number(self.auroc),
            "auroc_ci": ci_dict(self.auroc_ci),
            "youden": {k: clean_number(v) for k, v in self.youden.to_dict().items()},
        }


@dataclass
class ClassificationResult:
    findings: dict[str, FindingMetrics]
    skipped: dict[str, str]
    macro_auroc: float
    macro_auroc_ci: tuple[float, float] | None
    macro_youden: dict[str, float]
    n_cases: int
    ci_level: float = 0.95
    n_boot: int = 0
    seed: int = 0
    # the scored cases themselves (cases, findings), for paired comparisons of two models (`eval.paired`)
    scores: np.ndarray | None = field(default=None, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    names: list[str] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_cases": self.n_cases,
            "n_findings": len(self.findings),
            "macro_auroc": clean_number(self.macro_auroc),
            "macro_auroc_ci": ci_dict(self.macro_auroc_ci),
            "macro_youden": {k: clean_number(v) for k, v in self.macro_youden.items()},
            "per_finding": {name: m.to_dict() for name, m in self.findings.items()},
            "skipped": dict(self.skipped),
            "ci_level": self.ci_level,
            "n_boot": self.n_boot,
            "seed": self.seed,
        }


def _as_2d(x: Any, name: str, dtype: Any) -> np.ndarray:
    arr = as_numpy(x, dtype=dtype, name=name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise EvalInputError(f"{name} must be (cases, findings), got shape {arr.shape}")
    return arr


def evaluate_scores(
    scores: Any,
    labels: Any,
    names: Sequence[str] | None = None,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    ci_level: float = 0.95,
) -> ClassificationResult:
    """Evaluate (cases, findings) scores (higher = more likely positive) against 1/0/-1 labels."""
    s = _as_2d(scores, "scores", np.float64)
    y = _as_2d(labels, "labels", np.float64)
    if s.shape != y.shape:
        raise EvalInputError(f"scores {s.shape} and labels {y.shape} differ in shape")
    y = np.where(np.isnan(y), -1, y).astype(np.int64)
    if not np.all(np.isin(y, (-1, 0, 1))):
        raise EvalInputError("labels must be 1, 0 or -1 (unknown)")
    names = [f"finding_{i}" for i in range(s.shape[1])] if names is None else [str(n) for n in names]
    if len(names) != s.shape[1]:
        raise EvalInputError(f"{len(names)} names for {s.shape[1]} score columns")
    findings: dict[str, FindingMetrics] = {}
    skipped: dict[str, str] = {}
    kept_cols: list[int] = []
    for j, name in enumerate(names):
        known = y[:, j] >= 0
        sj, yj = s[known, j], y[known, j]
        n_pos, n_neg = int(yj.sum()), int((1 - yj).sum())
        if n_pos == 0 or n_neg == 0:
            n_unknown = int((~known).sum())
            skipped[name] = f"single class in labels ({n_pos} positive, {n_neg} negative, {n_unknown} unknown)"
            continue
        if not np.all(np.isfinite(sj)):
            raise EvalInputError(f"scores for {name!r} contain NaN or infinite values")
        fpr, tpr, _ = roc_curve(sj, yj)
        thr = youden_threshold(sj, yj)
        findings[name] = FindingMetrics(
            name, int(known.sum()), n_pos, n_neg, auroc(sj, yj), threshold_metrics(sj, yj, thr), fpr, tpr
        )
        kept_cols.append(j)
    if not findings:
        raise EvalInputError("no finding has both classes among its known labels")
    macro = float(np.mean([m.auroc for m in findings.values()]))
    macro_youden = {k: float(np.mean([getattr(m.youden, k) for m in findings.values()])) for k in THRESHOLD_METRICS}
    result = ClassificationResult(
        findings, skipped, macro, None, macro_youden, int(s.shape[0]), ci_level, int(n_boot), int(seed), s, y, names
    )
    if n_boot > 0:
        per = _bootstrap_aurocs(s[:, kept_cols], y[:, kept_cols], n_boot, seed)  # (B, F)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (no finding with both classes)
            macro_samples = np.nanmean(per, axis=1)
        result.macro_auroc_ci = percentile_ci(macro_samples, ci_level)
        for i, j in enumerate(kept_cols):
            findings[names[j]].auroc_ci = percentile_ci(per[:, i], ci_level)
    return result


def _bootstrap_aurocs(s: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    chunks = []
    known = [np.flatnonzero(y[:, j] >= 0) for j in range(s.shape[1])]
    plans = [AurocPlan(s[k, j], y[k, j]) for j, k in enumerate(known)]
    n = s.shape[0]
    for w in bootstrap_counts(n, n_boot, seed):
        cols = [plan(w if k.size == n else w[:, k]) for plan, k in zip(plans, known, strict=True)]
        chunks.append(np.stack(cols, axis=1))
    return np.concatenate(chunks, axis=0)


def macro_roc_curve(result: ClassificationResult, grid: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """Macro-average ROC: every finding's TPR interpolated on a common FPR grid, then averaged (for plots)."""
    fpr_grid = np.linspace(0.0, 1.0, grid)
    tprs = [interp_roc(m.fpr, m.tpr, fpr_grid) for m in result.findings.values()]
    return fpr_grid, np.mean(tprs, axis=0)


def interp_roc(fpr: np.ndarray, tpr: np.ndarray, x: np.ndarray) -> np.ndarray:
    """TPR of a ROC path (non-decreasing FPR, vertical runs allowed) at FPR values `x`: at an FPR where the
    path rises vertically the top of the rise is taken; between points the path is linear."""
    j = np.clip(np.searchsorted(fpr, x, side="right") - 1, 0, len(fpr) - 1)
    nxt = np.minimum(j + 1, len(fpr) - 1)
    dx = fpr[nxt] - fpr[j]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(dx > 0, (x - fpr[j]) / np.where(dx > 0, dx, 1.0), 0.0)
    return tpr[j] + np.clip(frac, 0.0, 1.0) * (tpr[nxt] - tpr[j])
