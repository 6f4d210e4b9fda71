"""Branching tubes (airways, pulmonary arteries and veins) grown by recursive splitting of lung sample points.

Each node heads toward the centroid of the lung points it owns and splits them in two along their widest
direction, so the tree fills the lung the way real segmental anatomy does without simulating growth.
"""

from __future__ import annotations

import numpy as np

Segment = tuple[np.ndarray, np.ndarray, float]  # (start, end, radius) in RAS mm


def grow(
    start: np.ndarray,
    points: np.ndarray,
    radius: float,
    depth: int,
    *,
    reach: float = 0.6,
    taper: float = 0.74,
    min_points: int = 6,
) -> list[Segment]:
    """Segments from ``start`` into the cloud ``points`` (N, 3); ``reach`` = fraction of the way to the centroid."""
    out: list[Segment] = []
    _grow(np.asarray(start, np.float64), points, radius, depth, reach, taper, min_points, out)
    return out


def _grow(start, pts, radius, depth, reach, taper, min_points, out) -> None:
    if depth < 0 or len(pts) < min_points:
        return
    c = pts.mean(0)
    end = start + reach * (c - start)
    if depth == 0:
        # Leaves run out to the far points so the smallest branches reach the lung periphery.
        end = start + 0.85 * (pts[np.argmax(((pts - start) ** 2).sum(1))] - start) if len(pts) else end
    out.append((start, end, radius))
    if depth == 0:
        return
    centred = pts - c
    # Split along the main axis of the owned points (first right singular vector).
    _, _, vt = np.linalg.svd(centred[:: max(1, len(pts) // 200)], full_matrices=False)
    side = centred @ vt[0] > 0
    for part in (pts[side], pts[~side]):
        _grow(end, part, radius * taper, depth - 1, reach, taper, min_points, out)


def offset_tree(segments: list[Segment], shift: np.ndarray, scale: float = 1.1) -> list[Segment]:
    """A companion tree beside ``segments`` (pulmonary arteries run alongside their bronchi), kept connected by
    shifting every node by the same vector."""
    return [(p0 + shift, p1 + shift, r * scale) for p0, p1, r in segments]
