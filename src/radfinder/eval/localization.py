"""Intra-scan snippet localization: which depth cell of its scan does a report snippet refer to?

Inputs per snippet: scores over depth cells, the true cell, the scan id. Scores are either
- a sequence of 1D arrays, one per snippet, every entry a valid cell (cell index = position), or
- an (N, D) array where invalid cells are NaN or -inf, or are masked out by `valid` (N, D) bool.

Prediction: argmax over the valid cells (first maximum on ties, i.e. the lowest cell index).
Error: |pred - true| * cell_mm (default 12 mm). When `true_z_mm` is given (per-snippet depth in mm, measured along
the cell axis from the start edge of cell 0) the error is measured from the predicted cell's centre,
(pred + 0.5) * cell_mm, to that depth instead.

Metrics: MAE and median error (mm), exact-cell accuracy, accuracy within 12 and 24 mm (error <= threshold,
inclusive), and the per-scan-averaged MAE (mean over scans of the mean error of the scan's snippets).

Baselines on the same snippets:
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

DEFAULT_CELL_MM = 12.0
DEFAULT_WITHIN_MM: tuple[float, ...] = (12.0, 24.0)


@dataclass
class LocalizationResult:
    cell_mm: float
    n_snippets: int
    n_scans: int
    metrics: dict[str, dict[str, float | None]]  # method -> metric -> value
    errors_mm: dict[str, np.ndarray] = field(repr=False)  # "model", "middle", "random_sample" -> per snippet
    pred_cells: np.ndarray = field(repr=False)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell_mm": self.cell_mm,
            "n_snippets": self.n_snippets,
            "n_scans": self.n_scans,
            "seed": self.seed,
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


def localization_metrics(
    cell_scores: Any,
    true_cells: Any,
    scan_ids: Sequence[Any] | None = None,
    *,
    valid: Any = None,
    cell_mm: float = DEFAULT_CELL_MM,
    true_z_mm: Any = None,
    within_mm: Sequence[float] = DEFAULT_WITHIN_MM,
    seed: int = 0,
) -> LocalizationResult:
    """Argmax localization metrics plus middle-cell and random-cell baselines (see module docstring).
    `scan_ids` default: every snippet its own scan."""
    scores, valids = _prepare(cell_scores, valid)
    n = len(scores)
    true = np.asarray(as_numpy(true_cells, dtype=np.int64, name="true cells")).ravel()
    if true.size != n:
        raise EvalInputError(f"{true.size} true cells for {n} snippets")
    scan_ids = list(range(n)) if scan_ids is None else [str(s) for s in scan_ids]
    if len(scan_ids) != n:
        raise EvalInputError(f"{len(scan_ids)} scan ids for {n} snippets")
    _, scan_idx = np.unique(np.asarray(scan_ids, dtype=object).astype(str), return_inverse=True)
    z = None
    if true_z_mm is not None:
        z = as_numpy(true_z_mm, name="true_z_mm").ravel()
        if z.size != n:
            raise EvalInputError(f"{z.size} true depths for {n} snippets")
    for i, (t, v) in enumerate(zip(true, valids, strict=True)):
        if t not in v:
            raise EvalInputError(f"snippet {i}: true cell {int(t)} is not a valid cell")

    def err_of(cells: np.ndarray) -> np.ndarray:
        if z is None:
            return np.abs(cells - true).astype(np.float64) * cell_mm
        return np.abs((cells + 0.5) * cell_mm - z)

    pred = np.array([v[np.argmax(s[v])] for s, v in zip(scores, valids, strict=True)], dtype=np.int64)
    middle = np.array([v[v.size // 2] for v in valids], dtype=np.int64)
    rng = np.random.default_rng(seed)
    rand = np.array([v[rng.integers(v.size)] for v in valids], dtype=np.int64)

    errors = {"model": err_of(pred), "middle": err_of(middle), "random_sample": err_of(rand)}
    metrics = {
        "model": _summary(errors["model"], pred == true, scan_idx, within_mm),
        "middle": _summary(errors["middle"], middle == true, scan_idx, within_mm),
        "random_sample": _summary(errors["random_sample"], rand == true, scan_idx, within_mm),
        "random_expected": _expected_random(valids, true, z, scan_idx, cell_mm, within_mm),
    }
    return LocalizationResult(float(cell_mm), n, int(scan_idx.max()) + 1, metrics, errors, pred, int(seed))


def _expected_random(valids, true, z, scan_idx, cell_mm, within_mm) -> dict[str, float | None]:
    """Exact expectation over a uniform draw of one valid cell per snippet."""
    mae, exact, within = [], [], {t: [] for t in within_mm}
    for i, v in enumerate(valids):
        e = np.abs(v - true[i]) * cell_mm if z is None else np.abs((v + 0.5) * cell_mm - z[i])
        mae.append(e.mean())
        exact.append(np.mean(v == true[i]))
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
