"""Paired bootstrap of the difference between two models scored on the same held-out studies.

Both models' statistics are computed on the SAME resamples of studies (`bootstrap.bootstrap_counts` with one seed),
so what the interval measures is the spread of the difference, not of either metric: a split with a few hundred
studies cannot separate two methods by their separate CIs, but often can by the paired one.

A statistic is a function of study weights (B, n_studies) -> (B,) whose value at weights all one is the metric as
reported. The builders below map the weights to the metric's own cases (queries, snippets, labelled studies)
through an index into the study list: a snippet counts as often as its study was drawn.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._common import EvalInputError
from .bootstrap import DEFAULT_N_BOOT, AurocPlan, bootstrap_counts, percentile_ci, weighted_median

Statistic = Callable[[np.ndarray], np.ndarray]


def _case_weights(w: np.ndarray, study_of_case: np.ndarray | None) -> np.ndarray:
    w = np.atleast_2d(w)
    return w if study_of_case is None else w[:, study_of_case]


def mean_statistic(values: Sequence[float], study_of_case: Sequence[int] | None = None) -> Statistic:
    """Weighted mean of per-case values (recall@k as 0/1 hits, absolute errors, ranks)."""
    v = np.asarray(values, np.float64)
    idx = None if study_of_case is None else np.asarray(study_of_case, int)

    def stat(w: np.ndarray) -> np.ndarray:
        cw = _case_weights(w, idx).astype(np.float64)
        tot = cw.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tot > 0, cw @ v / np.where(tot > 0, tot, 1.0), np.nan)

    return stat


def median_statistic(values: Sequence[float], study_of_case: Sequence[int] | None = None) -> Statistic:
    """Median of per-case values (median rank) over the weighted sample."""
    v = np.asarray(values, np.float64)
    idx = None if study_of_case is None else np.asarray(study_of_case, int)
    return lambda w: weighted_median(v, _case_weights(w, idx))


def macro_auroc_statistic(scores: np.ndarray, labels: np.ndarray,
                          study_of_case: Sequence[int] | None = None) -> Statistic:
    """Mean AUROC over the findings with both classes among the known (0/1) labels of the full sample, as
    `classification.evaluate_scores` reports it; a resample without one class of a finding leaves that finding
    out of its mean."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    if s.shape != y.shape or s.ndim != 2:
        raise EvalInputError(f"scores {s.shape} and labels {y.shape} must be the same (cases, findings)")
    idx = None if study_of_case is None else np.asarray(study_of_case, int)
    plans = []
    for j in range(s.shape[1]):
        known = np.flatnonzero(y[:, j] >= 0)
        yj = y[known, j]
        if yj.size and 0 < yj.sum() < yj.size:
            plans.append((known, AurocPlan(s[known, j], yj == 1)))
    if not plans:
        raise EvalInputError("no finding has both classes among its known labels")

    def stat(w: np.ndarray) -> np.ndarray:
        cw = _case_weights(w, idx)
        per = np.stack([plan(cw[:, known]) for known, plan in plans], axis=1)
        with warnings.catch_warnings():  # a resample with no scorable finding is NaN, dropped by the CI
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(per, axis=1)

    return stat


def paired_difference(a: Statistic, b: Statistic, n_studies: int, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                      ci_level: float = 0.95) -> dict[str, Any]:
    """a minus b at the full sample and its percentile CI over `n_boot` resamples of the n studies, both
    statistics on every resample; `p_not_above_zero` is the share of resamples where a - b <= 0."""
    ones = np.ones((1, n_studies), np.int32)
    point = float(a(ones)[0] - b(ones)[0])
    out: dict[str, Any] = {"difference": point, "n_studies": int(n_studies), "n_boot": int(n_boot), "seed": seed}
    if n_boot <= 0:
        return out | {"ci95": None, "p_not_above_zero": None}
    diffs = np.concatenate([a(w) - b(w) for w in bootstrap_counts(n_studies, n_boot, seed)])
    finite = diffs[np.isfinite(diffs)]
    lo, hi = percentile_ci(diffs, ci_level)
    out["ci95" if ci_level == 0.95 else f"ci{int(round(100 * ci_level))}"] = [lo, hi]
    out["p_not_above_zero"] = float((finite <= 0).mean()) if finite.size else None
    return out


# -- per-case arrays of one evaluation (`evaluate` writes them as cases.npz beside metrics.json)
CASES_FILE = "cases.npz"


def case_arrays(records: Sequence[Any], res: Any, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """What a paired comparison needs of one evaluation (`TaskResults` of `records`, embedded in `keys` order):
    text-to-volume ranks per query, zero-shot scores and labels per study, localization errors per snippet, each
    with the index of its study in `keys`."""
    from .tasks import report_queries

    index = {k: i for i, k in enumerate(keys)}
    out: dict[str, np.ndarray] = {"keys": np.asarray(list(keys), dtype=str)}
    if res.retrieval is not None and "text_to_volume" in res.retrieval:
        first = {}
        for r in records:
            first.setdefault(r.report_id, index[r.key])
        ids, _ = report_queries(records)
        t2v = res.retrieval["text_to_volume"]
        out["t2v_ranks"] = np.asarray(t2v.ranks, np.int64)
        out["t2v_study"] = np.array([first[i] for i in ids], np.int64)
        out["t2v_gallery"] = np.array(t2v.n_gallery, np.int64)
    zs = (res.classification or {}).get("zero-shot (mean7)")
    if zs is not None and zs.scores is not None:
        out["zs_scores"], out["zs_labels"] = zs.scores, zs.labels
    if res.localization is not None:
        out["loc_errors_mm"] = np.asarray(res.localization.errors_mm["model"], np.float64)
        out["loc_study"] = np.array([index[p.key] for p in res.localization_pairs], np.int64)
    return out


def task_statistics(cases: dict[str, np.ndarray]) -> dict[tuple[str, str], Statistic]:
    """{(task, metric): statistic over study weights} for the tasks present in `cases` (metric names as in the
    demo's metrics.json)."""
    stats: dict[tuple[str, str], Statistic] = {}
    if "t2v_ranks" in cases:
        ranks, study = cases["t2v_ranks"], cases["t2v_study"]
        for k in (1, 5, 10):
            stats[("retrieval", f"R@{k}")] = mean_statistic(ranks <= k, study)
        stats[("retrieval", "median_rank")] = median_statistic(ranks, study)
    if "zs_scores" in cases:
        stats[("zero_shot", "macro_auroc")] = macro_auroc_statistic(cases["zs_scores"], cases["zs_labels"])
    if "azs_scores" in cases:
        stats[("anatomy_zero_shot", "macro_auroc")] = macro_auroc_statistic(cases["azs_scores"], cases["azs_labels"])
    if "loc_errors_mm" in cases:
        stats[("localization", "mae_mm")] = mean_statistic(cases["loc_errors_mm"], cases["loc_study"])
    return stats


def paired_deltas(cases_a: dict[str, np.ndarray], cases_b: dict[str, np.ndarray], *, n_boot: int = DEFAULT_N_BOOT,
                  seed: int = 0) -> dict[str, dict[str, Any]]:
    """{task: {metric: paired_difference(a - b)}} on every metric both evaluations have; the two must have scored
    the same studies in the same order (EvalInputError otherwise)."""
    keys_a, keys_b = list(cases_a["keys"]), list(cases_b["keys"])
    if keys_a != keys_b:
        raise EvalInputError("the two evaluations scored different studies: a paired comparison needs the same")
    sa, sb = task_statistics(cases_a), task_statistics(cases_b)
    out: dict[str, dict[str, Any]] = {}
    for task, metric in sa:
        if (task, metric) in sb:
            out.setdefault(task, {})[metric] = paired_difference(sa[(task, metric)], sb[(task, metric)], len(keys_a),
                                                                 n_boot=n_boot, seed=seed)  # fmt: skip
    return out


def save_cases(path, cases: dict[str, np.ndarray]) -> None:
    np.savez_compressed(path, **cases)


def load_cases(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
