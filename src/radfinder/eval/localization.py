"""Intra-scan snippet localization: which depth cell of its scan does a report snippet refer to?

Inputs per snippet: scores over depth cells, its true cell(s), the scan id. Scores are either
- a sequence of 1D arrays, one per snippet, every entry a valid cell (cell index = position), or
- an (N, D) array where invalid cells are NaN or -inf, or are masked out by `valid` (N, D) bool.
"Valid" cells are the candidates: the caller passes only cells inside the scanned extent (never padding; see
`radfinder.eval.tasks.run_localization`), and the baselines draw from the same candidates.

A snippet that cites several images has several true cells (one per cited image, as mined): it is scored ONCE,
against the nearest of them (the prediction is right if it finds any of the images the sentence points at).

Prediction: argmax over the valid cells (first maximum on ties, i.e. the lowest cell index).
Error: min over the true cells of |pred - true| * cell_mm (default 12 mm). When `true_depth_mm` is given (the true
depth of each cited image in mm along the cell axis from the start edge of cell 0: pairs.jsonl's ``depth_mm``) the
error is measured from the predicted cell's centre, (pred + 0.5) * cell_mm, to the nearest true depth instead.

Metrics: MAE and median error (mm), exact-cell accuracy (pred is one of the true cells), accuracy within 12 and
24 mm (INCLUSIVE: error <= threshold, so a prediction exactly one cell away on the cell grid counts as within
12 mm), and the per-scan-averaged MAE (mean over scans of the mean error of the scan's snippets).

Baselines on the same snippets and candidates:
- middle: the middle valid cell, ``valid_cells[n_valid // 2]``;
- random (expected): the exact expectation when the cell is drawn uniformly from the valid cells (median is
  not linear in the draw and is reported as None);
- random (sample): one seeded uniform draw per snippet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radfinder.eval._common import EvalInputError, as_numpy, clean_number
from radfinder.preprocess.cells import cell_centre_mm

DEFAULT_CELL_MM = 12.0
DEFAULT_WITHIN_MM: tuple[float, ...] = (12.0, 24.0)
WITHIN_RULE = "error_mm <= threshold (inclusive)"


@dataclass
class LocalizationResult:
    cell_mm: float
    n_snippets: int
    n_scans: int
    metrics: dict[str, dict[str, float | None]]  # method -> metric -> value
    errors_mm: dict[str, np.ndarray] = field(repr=False)  # "model", "middle", "random_sample" -> per snippet
    pred_cells: np.ndarray = field(repr=False)
    seed: int = 0
    truth: str = "cell"  # "depth_mm": errors against the true depth in mm; "cell": against true cell centres

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell_mm": self.cell_mm,
            "n_snippets": self.n_snippets,
            "n_scans": self.n_scans,
            "seed": self.seed,
            "truth": self.truth,
            "within_rule": WITHIN_RULE,
            "scoring": "each snippet once, against the nearest of its true cells",
            **{m: {k: clean_number(v) for k, v in d.items()} for m, d in self.metrics.items()},
        }


def _prepare(cell_scores: Any, valid: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per snippet: (scores over all cells, indices of valid cells)."""
    out_s, out_v = [], []
    if isinstance(cell_scores, (list, tuple)):
        if valid is not None:
            raise EvalInputError("`valid` applies to an (N, D) score array, not to a list of per-snippet arrays")
        rows = [as_numpy(r, name=f"cell scores[{i}]").ravel() for i, r in enumerate(cell_scores)]
        masks = [np.isfinite(r) for r in rows]
    else:
        arr = as_numpy(cell_scores, name="cell scores")
        if arr.ndim != 2:
            raise EvalInputError(f"cell scores must be (snippets, cells) or a list of 1D arrays, got {arr.shape}")
        m = np.isfinite(arr)
        if valid is not None:
            v = np.asarray(as_numpy(valid, dtype=bool, name="valid"))
            if v.shape != arr.shape:
                raise EvalInputError(f"valid mask {v.shape} does not match cell scores {arr.shape}")
            m &= v
        rows, masks = list(arr), list(m)
    for i, (r, m) in enumerate(zip(rows, masks, strict=True)):
        idx = np.flatnonzero(m)
        if idx.size == 0:
            raise EvalInputError(f"snippet {i} has no valid depth cell")
        out_s.append(r)
        out_v.append(idx)
    return out_s, out_v


def _summary(err_mm: np.ndarray, exact: np.ndarray, scan_idx: np.ndarray, within_mm: Sequence[float]) -> dict:
    per_scan = np.bincount(scan_idx, weights=err_mm) / np.bincount(scan_idx)
    out: dict[str, float | None] = {
        "mae_mm": float(err_mm.mean()),
        "median_mm": float(np.median(err_mm)),
        "acc_exact": float(exact.mean()),
    }
    for t in within_mm:
        out[f"acc_within_{t:g}mm"] = float(np.mean(err_mm <= t + 1e-9))
    out["per_scan_mae_mm"] = float(per_scan.mean())
    return out


def _per_snippet(values: Any, n: int, name: str, cast) -> list[np.ndarray]:
    """One value per snippet (a flat sequence) or several (a sequence of sequences) -> a list of 1D arrays."""
    if isinstance(values, np.ndarray):
        out = [np.atleast_1d(v).ravel() for v in values] if values.ndim > 1 else [values[i : i + 1]
                                                                                   for i in range(values.size)]
    elif hasattr(values, "__len__"):
        out = [np.atleast_1d(as_numpy(v, name=name)).ravel() for v in values]
    else:
        raise EvalInputError(f"{name} must be a sequence with one entry per snippet")
    if len(out) != n:
        raise EvalInputError(f"{len(out)} {name} for {n} snippets")
    for i, v in enumerate(out):
        if v.size == 0:
            raise EvalInputError(f"snippet {i}: no {name}")
    return [v.astype(cast) for v in out]


def localization_metrics(
    cell_scores: Any,
    true_cells: Any,
    scan_ids: Sequence[Any] | None = None,
    *,
    valid: Any = None,
    cell_mm: float = DEFAULT_CELL_MM,
    true_depth_mm: Any = None,
    within_mm: Sequence[float] = DEFAULT_WITHIN_MM,
    seed: int = 0,
) -> LocalizationResult:
    """Argmax localization metrics plus middle-cell and random-cell baselines (see module docstring).

    true_cells: one cell per snippet, or a sequence of cells per snippet (a snippet citing several images).
    true_depth_mm: None, or the true depths (mm from the start edge of cell 0) in the same structure.
    `scan_ids` default: every snippet its own scan."""
    scores, valids = _prepare(cell_scores, valid)
    n = len(scores)
    trues = _per_snippet(true_cells, n, "true cells", np.int64)
    scan_ids = list(range(n)) if scan_ids is None else [str(s) for s in scan_ids]
    if len(scan_ids) != n:
        raise EvalInputError(f"{len(scan_ids)} scan ids for {n} snippets")
    _, scan_idx = np.unique(np.asarray(scan_ids, dtype=object).astype(str), return_inverse=True)
    depths = None
    if true_depth_mm is not None:
        depths = _per_snippet(true_depth_mm, n, "true depths", np.float64)
        for i, (d, t) in enumerate(zip(depths, trues, strict=True)):
            if d.size != t.size:
                raise EvalInputError(f"snippet {i}: {d.size} true depths for {t.size} true cells")
            if not np.all(np.isfinite(d)):
                raise EvalInputError(f"snippet {i}: true depth is not a finite number")
    for i, (t, v) in enumerate(zip(trues, valids, strict=True)):
        bad = np.setdiff1d(t, v)
        if bad.size:
            raise EvalInputError(f"snippet {i}: true cell {int(bad[0])} is not a valid cell")

    def err_of(i: int, cells: np.ndarray) -> np.ndarray:
        """Error (mm) of candidate cell(s) for snippet i: distance to the nearest of its true cells or depths."""
        c = np.asarray(cells)[..., None]
        if depths is None:
            return np.abs(c - trues[i]).min(axis=-1).astype(np.float64) * cell_mm
        return np.abs(cell_centre_mm(c, cell_mm) - depths[i]).min(axis=-1)

    def errors(cells: np.ndarray) -> np.ndarray:
        return np.array([float(err_of(i, c)) for i, c in enumerate(cells)], dtype=np.float64)

    def hits(cells: np.ndarray) -> np.ndarray:
        return np.array([c in t for c, t in zip(cells, trues, strict=True)], dtype=bool)

    pred = np.array([v[np.argmax(s[v])] for s, v in zip(scores, valids, strict=True)], dtype=np.int64)
    middle = np.array([v[v.size // 2] for v in valids], dtype=np.int64)
    rng = np.random.default_rng(seed)
    rand = np.array([v[rng.integers(v.size)] for v in valids], dtype=np.int64)

    errs = {"model": errors(pred), "middle": errors(middle), "random_sample": errors(rand)}
    metrics = {
        "model": _summary(errs["model"], hits(pred), scan_idx, within_mm),
        "middle": _summary(errs["middle"], hits(middle), scan_idx, within_mm),
        "random_sample": _summary(errs["random_sample"], hits(rand), scan_idx, within_mm),
        "random_expected": _expected_random(valids, trues, err_of, scan_idx, within_mm),
    }
    return LocalizationResult(float(cell_mm), n, int(scan_idx.max()) + 1, metrics, errs, pred, int(seed),
                              "depth_mm" if depths is not None else "cell")


def _expected_random(valids, trues, err_of, scan_idx, within_mm) -> dict[str, float | None]:
    """Exact expectation over a uniform draw of one valid cell per snippet."""
    mae, exact, within = [], [], {t: [] for t in within_mm}
    for i, v in enumerate(valids):
        e = err_of(i, v)
        mae.append(e.mean())
        exact.append(np.mean(np.isin(v, trues[i])))
        for t in within_mm:
            within[t].append(np.mean(e <= t + 1e-9))
    mae_arr = np.asarray(mae)
    per_scan = np.bincount(scan_idx, weights=mae_arr) / np.bincount(scan_idx)
    out: dict[str, float | None] = {
        "mae_mm": float(mae_arr.mean()),
        "median_mm": None,
        "acc_exact": float(np.mean(exact)),
    }
    for t in within_mm:
        out[f"acc_within_{t:g}mm"] = float(np.mean(within[t]))
    out["per_scan_mae_mm"] = float(per_scan.mean())
    return out
