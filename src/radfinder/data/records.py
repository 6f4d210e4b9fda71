"""`StudyRecord`: one volume with its report, labels and provenance; what every dataset loader yields."""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RadfinderError
from ..text.findings import CTRATE_FINDINGS


class DatasetError(RadfinderError):
    """A dataset folder or table does not have the expected layout or content (the message names the file)."""


@dataclass
class StudyRecord:
    """One trainable/evaluable volume.

    key: unique volume id (feature-cache key), e.g. "train_12_a_1".
    path: the volume (file or DICOM folder) as `radfinder.io.load_volume` reads it.
    report_id: the report it belongs to (several reconstructions share one report), e.g. "train_12_a".
    patient: patient id, for patient-level splits (the key itself where a dataset has no patient ids).
    split: the split the record came from ("train", "valid", "traindev", ...).
    labels: (18,) float32 in CT-RATE column order, 1/0, and -1 for unknown.
    series: DICOM series selector, when `path` is a DICOM folder.
    load_opts: extra keyword arguments for `load_volume` (e.g. ``spacing`` of an NPZ); use `load_volume()`.
    extra: dataset specifics (metadata columns, the full report, ...).
    """

    key: str
    path: str
    report_id: str
    findings: str
    impressions: str
    patient: str
    split: str
    dataset: str
    labels: np.ndarray = field(default_factory=lambda: np.full(len(CTRATE_FINDINGS), -1.0, dtype=np.float32))
    series: str | None = None
    load_opts: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def report_text(self) -> str:
        """The query/training text format of RadFinder: findings then impressions."""
        return f"Findings: {self.findings}\nImpressions: {self.impressions}\n"

    @property
    def has_report(self) -> bool:
        return bool(self.findings.strip() or self.impressions.strip())

    @property
    def has_labels(self) -> bool:
        """True when at least one of the 18 classes is known (not -1)."""
        return bool(np.any(self.labels >= 0))

    def load_volume(self, **kwargs: Any):
        """Read the volume with `radfinder.io.load_volume`, applying `series` and `load_opts`."""
        from ..io import load_volume

        opts = {**self.load_opts, **kwargs}
        if self.series is not None:
            opts.setdefault("series", self.series)
        return load_volume(self.path, **opts)


def _norm_name(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).lower()


_NORMALISED = {_norm_name(n): n for n in CTRATE_FINDINGS}


def _label_value(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return -1.0
    if f != f:  # NaN
        return -1.0
    return 1.0 if f > 0.5 else (0.0 if f >= 0 else -1.0)


def labels_from_row(row: Mapping[str, Any], names=CTRATE_FINDINGS) -> np.ndarray:
    """18 labels from a CSV row; missing or non-numeric cells become -1 (unknown)."""
    out = np.full(len(names), -1.0, dtype=np.float32)
    for i, name in enumerate(names):
        out[i] = _label_value(row.get(name))
    return out


def label_columns(columns: Iterable[str]) -> dict[str, str]:
    """Which columns name a CT-RATE class, matched case-insensitively with "_" as " ": {column: class name}."""
    found = {}
    for c in columns:
        name = _NORMALISED.get(_norm_name(c))
        if name is not None:
            found[c] = name
    return found


def labels_from_any(value: Any, where: str) -> np.ndarray:
    """18 labels from a list of 18 numbers or a {class name: value} mapping (JSONL manifests)."""
    out = np.full(len(CTRATE_FINDINGS), -1.0, dtype=np.float32)
    if isinstance(value, Mapping):
        cols = label_columns(value)
        unknown = [k for k in value if k not in cols]
        if unknown:
            raise DatasetError(f"{where}: unknown label name(s) {unknown}; use the 18 CT-RATE class names")
        for col, name in cols.items():
            out[CTRATE_FINDINGS.index(name)] = _label_value(value[col])
        return out
    if isinstance(value, (list, tuple)):
        if len(value) != len(CTRATE_FINDINGS):
            raise DatasetError(f"{where}: 'labels' has {len(value)} values, need {len(CTRATE_FINDINGS)}")
        return np.array([_label_value(v) for v in value], dtype=np.float32)
    raise DatasetError(f"{where}: 'labels' must be a list of 18 numbers or a mapping, got {type(value).__name__}")


def patient_bucket(patient: str, seed: int = 0) -> float:
    """A stable number in [0, 1) per patient, for splits that never put one patient on both sides."""
    digest = hashlib.sha256(f"{seed}:{patient}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def holdout_split(
    records: list[StudyRecord], fraction: float, seed: int = 0, patients: Iterable[str] | None = None
) -> tuple[list[StudyRecord], list[StudyRecord]]:
    """Patient-level split: (kept, held_out). Held out are the given `patients`, or else about `fraction` of the
    patients chosen by a stable hash of (seed, patient), so the split does not depend on the record order."""
    if patients is None and not 0.0 <= fraction <= 1.0:
        raise DatasetError(f"hold-out fraction must be in [0, 1], got {fraction}")
    chosen = None if patients is None else set(patients)
    kept, held = [], []
    for r in records:
        out = (r.patient in chosen) if chosen is not None else patient_bucket(r.patient, seed) < fraction
        (held if out else kept).append(r)
    return kept, held


def read_name_list(path: str | Path) -> list[str]:
    """One name per line; blank lines and '#' comments skipped, a trailing .nii.gz/.nii/.npz removed."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read name list ({exc.strerror or exc})") from exc
    names = []
    for line in lines:
        s = line.split("#", 1)[0].strip()
        if s:
            names.append(strip_volume_suffix(s))
    return names


def strip_volume_suffix(name: str) -> str:
    for suffix in (".nii.gz", ".nii", ".npz", ".nrrd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def exclude_records(records: list[StudyRecord], exclude: str | Path | Iterable[str] | None) -> list[StudyRecord]:
    """Drop records whose key matches any name or glob pattern; `exclude` may also be a text file of names."""
    if exclude is None:
        return records
    if isinstance(exclude, (str, Path)) and Path(exclude).is_file():
        patterns = read_name_list(exclude)
    elif isinstance(exclude, str):
        patterns = [p.strip() for p in exclude.split(",") if p.strip()]
    else:
        patterns = [strip_volume_suffix(str(p)) for p in exclude]
    exact = {p for p in patterns if not any(ch in p for ch in "*?[")}
    globs = [p for p in patterns if p not in exact]
    return [r for r in records if r.key not in exact and not any(fnmatch.fnmatchcase(r.key, g) for g in globs)]


def require_unique_keys(records: Iterable[StudyRecord], where: str) -> None:
    """Raise naming the first duplicate key; every loader guarantees unique keys."""
    seen: set[str] = set()
    for r in records:
        if r.key in seen:
            raise DatasetError(f"{where}: duplicate key {r.key!r}")
        seen.add(r.key)
