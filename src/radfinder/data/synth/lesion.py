"""Lesions (what the report and ground truth talk about) and paint operations (how they appear in HU)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .canvas import Canvas

MaskFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Op:
    """Paint ``value`` (or add ``delta``) with weight ``mask(X, Y, Z)`` inside the world box [lo, hi].

    ``confine`` restricts painting to voxels whose tissue label is in the tuple (e.g. ground glass spares the
    vessels, consolidation spares the airways so air bronchograms stay). ``label`` re-labels painted voxels;
    ``seg`` is the finding's segmentation id (set by `findings.plan_findings`), marked where the weight > 0.5.
    """

    lo: np.ndarray
    hi: np.ndarray
    mask: MaskFn
    value: float | None = None
    delta: float | None = None
    confine: tuple[int, ...] | None = None
    label: int | None = None
    seg: int | None = None

    def paint(self, cv: Canvas) -> None:
        b = cv.box(self.lo, self.hi)
        if b is None:
            return
        s, X, Y, Z = b
        w = np.broadcast_to(self.mask(X, Y, Z), cv.hu[s].shape).astype(np.float32)
        if self.confine is not None:
            w = w * np.isin(cv.labels[s], self.confine)
        if self.delta is not None:
            cv.hu[s] += w * np.float32(self.delta)
            if self.seg is not None:
                cv.mark(s, w, self.seg)
        else:
            cv.blend(s, w, self.value, self.label, seg=self.seg)


@dataclass
class Lesion:
    """One visible abnormality: a reference point inside it, its box, and facts the report can state."""

    finding: str
    center: np.ndarray  # RAS mm, a point that lies inside the lesion (references point at its plane)
    lo: np.ndarray  # bounding box, RAS mm
    hi: np.ndarray
    side: str | None = None  # "right", "left", "bilateral"
    location: str | None = None  # lobe, station or structure, in English
    size_mm: float | None = None
    severity: str | None = None  # "mild", "moderate", "severe"
    kind: str | None = None  # sub-type, e.g. "port catheter", "ground-glass"
    count: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        ext = self.hi - self.lo
        return {
            "finding": self.finding,
            "center_ras_mm": [round(float(v), 2) for v in self.center],
            "extent_mm": [round(float(v), 2) for v in ext],
            "bbox_ras_mm": [[round(float(v), 2) for v in self.lo], [round(float(v), 2) for v in self.hi]],
            "side": self.side,
            "location": self.location,
            "size_mm": None if self.size_mm is None else round(float(self.size_mm), 1),
            "severity": self.severity,
            "kind": self.kind,
            "count": self.count,
        }


def inside_point(mask: MaskFn, lo, hi, step: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Sample ``mask`` on a coarse grid over [lo, hi]: the in-mask point nearest the weighted centroid (a point
    guaranteed inside, unlike the centroid of a crescent) and the tight box of the mask; None if empty."""
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    axes = [np.arange(a, b + step, step, dtype=np.float32) for a, b in zip(lo, hi, strict=True)]
    X, Y, Z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    w = np.broadcast_to(mask(X, Y, Z), (len(axes[0]), len(axes[1]), len(axes[2])))
    idx = np.argwhere(w > 0.5)
    if idx.size == 0:
        return None
    pts = np.stack([axes[d][idx[:, d]] for d in range(3)], 1).astype(np.float64)
    c = pts.mean(0)
    centre = pts[np.argmin(((pts - c) ** 2).sum(1))]
    return centre, pts.min(0) - step / 2, pts.max(0) + step / 2


def box_of(center, radius) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(center, np.float64)
    r = np.broadcast_to(np.asarray(radius, np.float64), (3,))
    return c - r, c + r
