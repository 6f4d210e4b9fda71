"""Per-finding calibration of the zero-shot margins, saved beside a checkpoint as `calibration.json`.

The zero-shot score of a finding is the margin m = cos(x, positive prompts) - cos(x, negative prompts). Its raw
probability sigmoid(m) is uninformative in practice: margins of a trained model span a few hundredths, so every
finding sits near 0.5 for every scan. A calibration maps each finding's margin to p = sigmoid(scale * m + bias),
with scale and bias fitted by logistic regression (Platt scaling) on a TRAINING split's margins against labels
read from that split's own reports (never ground truth, never the split being evaluated). Ranking by p is ranking
by m whenever the scale is positive, so AUROC and the zero-shot metrics do not change; what changes is that 0.5
now means "as likely as not" for a reader.

A checkpoint without `calibration.json` gives the raw sigmoid(m), and every consumer says it is uncalibrated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError

CALIBRATION_FILE = "calibration.json"
FORMAT = "radfinder-finding-calibration"
VERSION = 1


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))


def fit_platt(margin: Sequence[float], labels: Sequence[float], *, l2: float = 1e-4,
              max_iter: int = 100) -> tuple[float, float]:
    """(scale, bias) of p = sigmoid(scale * margin + bias) fitted to 1/0 labels (other values are ignored).

    Platt's smoothed targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2) stand in for 1 and 0, so a split with no
    positive (or no negative) study gives a finite fit near the prior instead of an infinite scale; the margin is
    standardised before the Newton steps so that a spread of 0.01 and one of 10 converge alike."""
    m = np.asarray(margin, np.float64).ravel()
    y = np.asarray(labels, np.float64).ravel()
    if m.shape != y.shape:
        raise ValueError(f"margin and labels differ in length: {m.shape} vs {y.shape}")
    keep = np.isfinite(m) & ((y == 0) | (y == 1))
    m, y = m[keep], y[keep]
    if m.size == 0:
        return 1.0, 0.0  # nothing to fit on: the raw sigmoid
    n_pos, n_neg = float(y.sum()), float(m.size - y.sum())
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    mu, sd = float(m.mean()), float(m.std())
    sd = sd if sd > 1e-12 else 1.0
    x = (m - mu) / sd
    w = np.zeros(2)  # [slope on standardised margin, intercept]
    design = np.stack([x, np.ones_like(x)], axis=1)
    for _ in range(max_iter):
        p = sigmoid(design @ w)
        grad = design.T @ (p - t) + l2 * np.array([w[0], 0.0])
        hess = (design * (p * (1 - p))[:, None]).T @ design + np.diag([l2, 1e-9])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    scale = w[0] / sd
    return float(scale), float(w[1] - scale * mu)


@dataclass
class FindingCalibration:
    """scale and bias per finding (p = sigmoid(scale * margin + bias)) and where they were fitted (`meta`)."""

    findings: tuple[str, ...]
    scale: np.ndarray
    bias: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.findings = tuple(self.findings)
        self.scale = np.asarray(self.scale, np.float64).ravel()
        self.bias = np.asarray(self.bias, np.float64).ravel()
        if not (len(self.findings) == self.scale.size == self.bias.size):
            raise CheckpointError(f"calibration: {len(self.findings)} findings but {self.scale.size} scales and "
                                  f"{self.bias.size} biases")  # fmt: skip
        if not (np.all(np.isfinite(self.scale)) and np.all(np.isfinite(self.bias))):
            raise CheckpointError("calibration: scales and biases must be finite")

    @classmethod
    def fit(cls, margins: np.ndarray, labels: np.ndarray, findings: Sequence[str],
            meta: dict[str, Any] | None = None) -> FindingCalibration:
        """Fit every finding (columns of the (N, F) margins and 1/0/-1 labels) with `fit_platt`."""
        m, y = np.asarray(margins, np.float64), np.asarray(labels, np.float64)
        if m.ndim != 2 or m.shape != y.shape or m.shape[1] != len(findings):
            raise ValueError(f"margins {m.shape} and labels {y.shape} must both be (N, {len(findings)})")
        fits = [fit_platt(m[:, j], y[:, j]) for j in range(m.shape[1])]
        info = dict(meta or {})
        info.setdefault("n", int(m.shape[0]))
        info.setdefault("positives", {f: int((y[:, j] == 1).sum()) for j, f in enumerate(findings)})
        return cls(tuple(findings), [a for a, _ in fits], [b for _, b in fits], info)

    def columns(self, findings: Sequence[str]) -> np.ndarray:
        """Indices of `findings` in this calibration (CheckpointError if one is missing)."""
        index = {f: i for i, f in enumerate(self.findings)}
        missing = [f for f in findings if f not in index]
        if missing:
            raise CheckpointError(f"the calibration has no entry for {', '.join(missing)}")
        return np.array([index[f] for f in findings], dtype=int)

    def covers(self, findings: Sequence[str]) -> bool:
        return set(findings) <= set(self.findings)

    def logits(self, margins: np.ndarray, findings: Sequence[str] | None = None) -> np.ndarray:
        """scale * margin + bias for margins (..., F) of `findings` (default: this calibration's own order); the
        logit keeps an order where the probability of two far-out scans would round to the same 1.0."""
        cols = np.arange(len(self.findings)) if findings is None else self.columns(findings)
        m = np.asarray(margins, np.float64)
        if m.shape[-1] != cols.size:
            raise ValueError(f"margins have {m.shape[-1]} findings, expected {cols.size}")
        return self.scale[cols] * m + self.bias[cols]

    def probabilities(self, margins: np.ndarray, findings: Sequence[str] | None = None) -> np.ndarray:
        """Calibrated p for margins (..., F) of `findings` (default: this calibration's own order)."""
        return sigmoid(self.logits(margins, findings))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "method": "platt",
                "findings": {f: {"scale": float(a), "bias": float(b)}
                             for f, a, b in zip(self.findings, self.scale, self.bias, strict=True)},
                "meta": self.meta}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = CALIBRATION_FILE) -> FindingCalibration:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{where}: not a radfinder finding calibration")
        if int(data.get("version", 0)) > VERSION:
            raise CheckpointError(f"{where}: calibration version {data.get('version')} is newer than this radfinder")
        entries = data.get("findings")
        if not isinstance(entries, dict) or not entries:
            raise CheckpointError(f"{where}: no findings")
        try:
            scale = [float(v["scale"]) for v in entries.values()]
            bias = [float(v["bias"]) for v in entries.values()]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: every finding needs a numeric scale and bias ({exc})") from None
        return cls(tuple(entries), scale, bias, dict(data.get("meta") or {}))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CALIBRATION_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)
        return path


def read_calibration(directory: str | Path) -> FindingCalibration | None:
    """The calibration saved in a checkpoint directory, or None when it has none."""
    path = Path(directory) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None
    return FindingCalibration.from_json(data, str(path))
