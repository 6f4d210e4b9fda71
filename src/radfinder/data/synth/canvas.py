"""A world-space painting surface: HU voxels plus the RAS coordinates of every array axis.

Everything in the phantom is described in world millimetres, so the same study renders identically on any
grid (demo or full resolution, thin or thick slices) and can be rendered in z-chunks to bound memory. Shapes
are painted with a soft edge one voxel wide, which gives the partial-volume look of a real reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Tissue label codes kept beside the HU values so that findings can be confined to an organ.
AIR, BODY, LUNG_R, LUNG_L, HEART, VESSEL, AIRWAY, BONE, LIVER = 0, 1, 2, 3, 4, 5, 6, 7, 8


@dataclass
class Canvas:
    """hu[i, j, k] at world (xs[i], ys[j], zs[k]) in RAS mm; labels and seg have the same shape.

    ``labels`` are the coarse tissue codes above (what findings are confined to); ``seg`` is the segmentation
    written beside every volume, in TotalSegmentator v2 class ids plus lesion ids (see `segmentation.py`).
    """

    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray
    hu: np.ndarray
    labels: np.ndarray
    voxel: float  # in-plane spacing, the width of the soft edge
    seg: np.ndarray | None = None

    @classmethod
    def empty(cls, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, voxel: float) -> Canvas:
        shape = (len(xs), len(ys), len(zs))
        return cls(
            xs=np.asarray(xs, np.float32),
            ys=np.asarray(ys, np.float32),
            zs=np.asarray(zs, np.float32),
            hu=np.full(shape, -1000.0, np.float32),
            labels=np.zeros(shape, np.uint8),
            voxel=float(voxel),
            seg=np.zeros(shape, np.uint8),
        )

    def box(self, lo, hi) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, np.ndarray] | None:
        """Index window covering the world box [lo, hi] and its broadcastable coordinates; None when empty."""
        sl = []
        for ax, (a, b) in zip((self.xs, self.ys, self.zs), zip(lo, hi, strict=True), strict=True):
            idx = np.nonzero((ax >= min(a, b)) & (ax <= max(a, b)))[0]
            if idx.size == 0:
                return None
            sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
        s = tuple(sl)
        return s, self.xs[s[0]][:, None, None], self.ys[s[1]][None, :, None], self.zs[s[2]][None, None, :]

    def blend(
        self, s, weight: np.ndarray, value, label: int | None = None, where: np.ndarray | None = None,
        seg: int | None = None,
    ) -> None:
        """hu = hu * (1 - w) + value * w inside window ``s``; label (and seg) set where w > 0.5."""
        w = np.broadcast_to(weight, self.hu[s].shape).astype(np.float32, copy=False)
        if where is not None:
            w = w * where
        region = self.hu[s]
        region += w * (np.asarray(value, np.float32) - region)
        if label is not None:
            lab = self.labels[s]
            lab[w > 0.5] = label
        if seg is not None:
            self.mark(s, w, seg)

    def mark(self, s, weight: np.ndarray, seg: int) -> None:
        """Set the segmentation id ``seg`` where ``weight`` > 0.5 inside window ``s`` (HU untouched)."""
        if self.seg is not None:
            region = self.seg[s]
            region[np.broadcast_to(weight, region.shape) > 0.5] = seg


def soft(distance_inside: np.ndarray, voxel: float) -> np.ndarray:
    """Edge weight from a signed distance in mm (positive inside): 1 inside, 0 outside, linear over one voxel."""
    return np.clip(distance_inside / voxel + 0.5, 0.0, 1.0).astype(np.float32)


def ellipsoid_weight(X, Y, Z, center, radii, rot: np.ndarray | None, voxel: float) -> np.ndarray:
    """Soft mask of an (optionally rotated) ellipsoid; rot columns are the ellipsoid axes in world space."""
    dx, dy, dz = X - center[0], Y - center[1], Z - center[2]
    if rot is not None:
        u = dx * rot[0, 0] + dy * rot[1, 0] + dz * rot[2, 0]
        v = dx * rot[0, 1] + dy * rot[1, 1] + dz * rot[2, 1]
        w = dx * rot[0, 2] + dy * rot[1, 2] + dz * rot[2, 2]
    else:
        u, v, w = dx, dy, dz
    r = np.sqrt((u / radii[0]) ** 2 + (v / radii[1]) ** 2 + (w / radii[2]) ** 2)
    # Distance to the surface approximated by (1 - r) times the smallest radius: exact for spheres, close enough
    # for the mild eccentricities used here.
    return soft((1.0 - r) * min(radii), voxel)


def segment_distance(X, Y, Z, p0, p1) -> np.ndarray:
    """Distance from every point to the segment p0-p1."""
    p0 = np.asarray(p0, np.float32)
    d = np.asarray(p1, np.float32) - p0
    dd = float(d @ d) or 1e-6
    t = np.clip(((X - p0[0]) * d[0] + (Y - p0[1]) * d[1] + (Z - p0[2]) * d[2]) / dd, 0.0, 1.0)
    return np.sqrt((X - p0[0] - t * d[0]) ** 2 + (Y - p0[1] - t * d[1]) ** 2 + (Z - p0[2] - t * d[2]) ** 2)


def paint_capsule(
    cv: Canvas,
    p0,
    p1,
    radius: float,
    value: float,
    label: int | None = None,
    wall: float = 0.0,
    wall_value: float | None = None,
    confine: tuple[int, ...] | None = None,
    seg: int | None = None,
    wall_seg: int | None = None,
) -> None:
    """A tube between two points; with ``wall`` a ring of ``wall_value`` surrounds a lumen of ``value``.

    ``seg`` marks the tube (lumen and wall) in the segmentation, ``wall_seg`` the wall ring alone."""
    r_out = radius + wall
    lo = np.minimum(p0, p1) - r_out - cv.voxel
    hi = np.maximum(p0, p1) + r_out + cv.voxel
    b = cv.box(lo, hi)
    if b is None:
        return
    s, X, Y, Z = b
    d = segment_distance(X, Y, Z, p0, p1)
    where = None if confine is None else np.isin(cv.labels[s], confine)
    if wall > 0 and wall_value is not None:
        w_out = soft(r_out - d, cv.voxel)
        cv.blend(s, w_out, wall_value, where=where, seg=wall_seg if wall_seg is not None else seg)
    cv.blend(s, soft(radius - d, cv.voxel), value, label, where=where, seg=seg)


def lattice_sample(field: np.ndarray, origin, step: float, X, Y, Z) -> np.ndarray:
    """Trilinear lookup of a coarse world-fixed random field (so textures do not depend on the render grid)."""
    from scipy.ndimage import map_coordinates

    shape = np.broadcast_shapes(X.shape, Y.shape, Z.shape)
    coords = [np.broadcast_to((c - o) / step, shape).ravel() for c, o in zip((X, Y, Z), origin, strict=True)]
    out = map_coordinates(field, coords, order=1, mode="nearest")
    return out.reshape(shape).astype(np.float32)
