"""`check_dataset`: validate a dataset before training or evaluation on it (`radfinder check-data`).

Shallow checks (fast; no volume is read): the loader runs, every volume exists and is not empty, keys are unique,
no patient is in two splits, every record has its report text and labels where the dataset has them, and the
kind's layout audit (files no table mentions, table joins, label mapping, known-broken volumes).
Deep checks (`deep=True`) read every volume with `radfinder.io.load_volume` in a process pool and flag unreadable
files (truncated, damaged, 4D, NaN, ...), constant volumes, HU ranges no CT has and volumes with very few slices.

Errors make `CheckResult.exit_code` 1; warnings only with `strict`.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import progress
from ..text.findings import CTRATE_FINDINGS
from .check_audit import AUDITS, Problem
from .records import DatasetError, StudyRecord
from .registry import dataset_kind, load_dataset

# HU plausibility: a chest/abdomen CT always contains air (about -1000) and soft tissue (> 0).
AIR_MAX_HU = -200.0  # the lowest voxel must be below this
TISSUE_MIN_HU = 0.0  # the highest voxel must be above this
EXTREME_LOW_HU, EXTREME_HIGH_HU = -4000.0, 40000.0
MIN_SLICES = 16

__all__ = ["CheckResult", "Problem", "check_dataset", "probe_volume", "volume_problems"]


@dataclass
class CheckResult:
    kind: str
    root: str
    splits: dict[str, int]
    deep: bool
    problems: list[Problem] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    def exit_code(self, strict: bool = False) -> int:
        return 1 if self.errors or (strict and self.warnings) else 0

    def to_json(self) -> dict[str, Any]:
        counts = Counter(f"{p.severity}:{p.code}" for p in self.problems)
        return {
            "kind": self.kind,
            "root": self.root,
            "deep": self.deep,
            "ok": not self.errors,
            "splits": self.splits,
            **self.summary,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "problem_counts": dict(sorted(counts.items())),
            "problems": [p.to_json() for p in self.problems],
        }


def probe_volume(path: str, load_opts: dict | None = None, series: str | None = None) -> dict[str, Any]:
    """Read one volume and return its facts, or the reason it cannot be read (runs in worker processes)."""
    from ..errors import VolumeReadError
    from ..io import load_volume

    try:
        vol = load_volume(path, **({"series": series} if series else {}), **(load_opts or {}))
    except VolumeReadError as exc:
        return {"ok": False, "error": exc.problem}
    except Exception as exc:  # any failure is a finding about this file, not a crash of the check
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    a = vol.array
    return {
        "ok": True,
        "shape": list(vol.shape),
        "spacing": [round(s, 4) for s in vol.spacing],
        "orientation": vol.orientation,
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean(dtype=np.float64)),
    }


def volume_problems(facts: dict[str, Any], rescale: tuple[float, float] | None = None) -> list[tuple[str, str, str]]:
    """(severity, code, message) for the facts of one read volume; `rescale` = (slope, intercept) to get HU."""
    if not facts["ok"]:
        return [("error", "unreadable_volume", facts["error"])]
    lo, hi = facts["min"], facts["max"]
    if rescale is not None:
        lo, hi = sorted((lo * rescale[0] + rescale[1], hi * rescale[0] + rescale[1]))
    out = []
    if lo == hi:
        return [("error", "constant_volume", f"every voxel is {lo:g}")]
    if lo > AIR_MAX_HU:
        out.append(("error", "implausible_hu", f"lowest value {lo:g} > {AIR_MAX_HU:g} HU: no air in the volume "
                    "(raw values without rescale, normalised intensities, or not a CT)"))  # fmt: skip
    if hi < TISSUE_MIN_HU:
        out.append(("error", "implausible_hu", f"highest value {hi:g} < {TISSUE_MIN_HU:g} HU: no soft tissue or bone"))
    if lo < EXTREME_LOW_HU or hi > EXTREME_HIGH_HU:
        out.append(("warning", "extreme_hu", f"values span [{lo:g}, {hi:g}] HU (padding value or damaged data?)"))
    if min(facts["shape"]) < MIN_SLICES:
        out.append(("warning", "few_slices", f"shape {facts['shape']}: fewer than {MIN_SLICES} voxels along an axis"))
    return out


def _load_split(spec, root: Path, split: str | None, opts: dict, problems: list[Problem]) -> list[StudyRecord]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            records = load_dataset(spec.name, root, split, require_files=False, **opts)
        except DatasetError as exc:
            problems.append(Problem("error", "load_failed", str(exc), split=split))
            return []
    for w in caught:
        problems.append(Problem("warning", "loader_warning", str(w.message), split=split))
    return records


def _shallow(records: list[StudyRecord], spec, problems: list[Problem]) -> dict[str, Any]:
    for key, n in Counter(r.key for r in records).items():
        if n > 1:
            splits = sorted({r.split for r in records if r.key == key})
            problems.append(Problem("error", "duplicate_key", f"key occurs {n} times (splits {splits})", key=key))
    by_patient: dict[str, set[str]] = defaultdict(set)
    for r in records:
        by_patient[r.patient].add(r.split)
    for patient, splits in sorted(by_patient.items()):
        if len(splits) > 1:
            problems.append(Problem("error", "patient_in_several_splits", f"patient in splits {sorted(splits)}",
                                    key=patient))  # fmt: skip
    has_reports = spec.has_reports if spec.has_reports is not None else any(r.has_report for r in records)
    has_labels = spec.has_labels if spec.has_labels is not None else any(r.has_labels for r in records)
    sev = "error" if spec.has_labels else "warning"
    n_missing = 0
    for r in records:
        p = Path(r.path)
        if not p.exists():
            n_missing += 1
            problems.append(Problem("error", "missing_volume", "file not found", r.key, r.path, r.split))
        elif p.is_file() and p.stat().st_size == 0:
            problems.append(Problem("error", "empty_file", "file is empty (0 bytes)", r.key, r.path, r.split))
        if has_reports and not r.has_report:
            problems.append(Problem("error", "missing_report", "no report text", r.key, r.path, r.split))
        if has_labels and not r.has_labels:
            problems.append(Problem(sev, "missing_labels", "no known label", r.key, r.path, r.split))
    labels = np.stack([r.labels for r in records]) if records else np.zeros((0, len(CTRATE_FINDINGS)))
    return {
        "n_records": len(records),
        "n_patients": len(by_patient),
        "n_missing_files": n_missing,
        "n_with_report": sum(r.has_report for r in records),
        "n_with_labels": sum(r.has_labels for r in records),
        "labels": {
            name: {
                "pos": int((labels[:, j] == 1).sum()),
                "neg": int((labels[:, j] == 0).sum()),
                "unknown": int((labels[:, j] < 0).sum()),
            }
            for j, name in enumerate(CTRATE_FINDINGS)
        },  # fmt: skip
    }


def _deep(records: list[StudyRecord], problems: list[Problem], workers: int | None, show: bool) -> dict[str, Any]:
    todo = [r for r in records if Path(r.path).exists()]
    workers = max(1, min(workers or min(4, os.cpu_count() or 1), len(todo) or 1))
    facts: dict[int, dict] = {}
    if workers == 1:
        for i, r in enumerate(progress(todo, total=len(todo), desc="check-data", enabled=show)):
            facts[i] = probe_volume(r.path, r.load_opts, r.series)
    else:
        import multiprocessing as mp

        # spawn: workers must not inherit a parent's threads (torch, tqdm) mid-lock.
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(probe_volume, r.path, r.load_opts, r.series): i for i, r in enumerate(todo)}
            for fut in progress(as_completed(futs), total=len(futs), desc="check-data", enabled=show):
                facts[futs[fut]] = fut.result()
    n_read = 0
    for i, r in enumerate(todo):
        f = facts[i]
        n_read += bool(f["ok"])
        slope, inter = r.extra.get("RescaleSlope"), r.extra.get("RescaleIntercept")
        rescale = (slope, inter) if r.extra.get("needs_rescale") and slope is not None and inter is not None else None
        for sev, code, msg in volume_problems(f, rescale):
            problems.append(Problem(sev, code, msg, r.key, r.path, r.split))
    return {"n_read": n_read, "n_unreadable": len(todo) - n_read}


def check_dataset(
    kind: str,
    root: str | Path,
    split: str | None = None,
    *,
    deep: bool = False,
    workers: int | None = None,
    show_progress: bool = True,
    **opts: Any,
) -> CheckResult:
    """Validate a dataset (all of its splits unless `split` is given); see the module docstring.

    opts: loader options (as for `load_dataset`, e.g. CT-RATE `mode="dup_all"`); `require_files` is always False
    so that missing files are listed rather than dropped. workers: processes for the deep read (default up to 4).
    """
    spec = dataset_kind(kind)
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such file or folder")
    opts.pop("require_files", None)
    splits = [split] if split is not None else list(spec.splits)
    if spec.name == "ctrate" and "mode" not in opts:
        opts["mode"] = "dup_all"  # check every volume, not only one per report
    problems: list[Problem] = []
    records: list[StudyRecord] = []
    per_split: dict[str, int] = {}
    for sp in splits:
        recs = _load_split(spec, root, sp, opts, problems)
        per_split[str(sp if sp is not None else spec.default_split or "all")] = len(recs)
        records.extend(recs)
    summary = _shallow(records, spec, problems)
    audit = AUDITS.get(spec.name)
    if audit is not None:
        try:
            problems.extend(audit(root, splits, opts))
        except DatasetError as exc:
            problems.append(Problem("error", "load_failed", str(exc)))
    if deep:
        summary.update(_deep(records, problems, workers, show_progress))
    return CheckResult(spec.name, str(root), per_split, deep, problems, summary)
