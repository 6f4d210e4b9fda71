"""`StudyRecord`: one volume with its report, labels and provenance; what every dataset loader yields."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..text.findings import CTRATE_FINDINGS


@dataclass
class StudyRecord:
    """One trainable/evaluable volume.

    key: unique volume id (feature-cache key), e.g. "train_12_a_1".
    report_id: the report it belongs to (several reconstructions share one report), e.g. "train_12_a".
    labels: (18,) float32 in CT-RATE column order, 1/0, and -1 for unknown.
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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def report_text(self) -> str:
        """The query/training text format of RadFinder: findings then impressions."""
        return f"Findings: {self.findings}\nImpressions: {self.impressions}\n"


def labels_from_row(row: dict[str, Any], names=CTRATE_FINDINGS) -> np.ndarray:
    """18 labels from a CSV row; missing or non-numeric cells become -1 (unknown)."""
    out = np.full(len(names), -1.0, dtype=np.float32)
    for i, name in enumerate(names):
        v = row.get(name)
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if f == f:  # not NaN
            out[i] = 1.0 if f > 0.5 else (0.0 if f >= 0 else -1.0)
    return out


def patient_bucket(patient: str, seed: int = 0) -> float:
    """A stable number in [0, 1) per patient, for splits that never put one patient on both sides."""
    digest = hashlib.sha256(f"{seed}:{patient}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def holdout_split(records: list[StudyRecord], fraction: float, seed: int = 0) -> tuple[list, list]:
    """Patient-level split: (kept, held_out), with about `fraction` of the patients held out."""
    kept, held = [], []
    for r in records:
        (held if patient_bucket(r.patient, seed) < fraction else kept).append(r)
    return kept, held
