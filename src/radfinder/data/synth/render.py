"""Scan geometry for a study (matrix, spacing, the two reconstructions) and rendering it to int16 HU.

Array convention (same as most axial DICOM): axis 0 runs toward the patient's Left, axis 1 Posterior, axis 2
Superior, so the RAS affine is diag(-dx, -dy, dz) plus an origin. The thick reconstruction is the average of
``m`` consecutive thin slices, which is what a scanner's slab reconstruction does and keeps lesions in the
same world place in both series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import Anatomy, render_anatomy
from .canvas import AIR, BODY, Canvas, soft
from .lesion import Op

RES = {
    # demo: about 2 mm in-plane with a matrix cropped to the body, thin/thick 2.5 / 5 mm. Real scanners
    # reconstruct 1-1.5 mm thin slices, but at demo size that would double the cohort on disk for no gain in
    # a 2 mm-in-plane model.
    "demo": {"xy": (1.9, 2.2), "thin": (2.5,), "chunk": 512, "noise": (6.0, 10.0)},
    # full: a real 512 x 512 matrix, sub-millimetre in-plane, 1-1.5 mm thin and 3-5 mm thick slices.
    "full": {"xy": None, "thin": (1.0, 1.25, 1.5), "chunk": 24, "noise": (18.0, 30.0)},
}


@dataclass
class ScanGeometry:
    xs: np.ndarray  # RAS x of axis 0 (decreasing: toward patient left)
    ys: np.ndarray  # RAS y of axis 1 (decreasing: toward posterior)
    zs_thin: np.ndarray  # RAS z of thin slices (increasing)
    dx: float
    thin: float
    m: int  # thin slices per thick slice

    @property
    def zs_thick(self) -> np.ndarray:
        n = len(self.zs_thin) // self.m
        return self.zs_thin[: n * self.m].reshape(n, self.m).mean(1)

    def affine(self, zs: np.ndarray) -> np.ndarray:
        dz = float(zs[1] - zs[0]) if len(zs) > 1 else self.thin
        aff = np.diag([-self.dx, -self.dx, dz, 1.0])
        aff[:3, 3] = [self.xs[0], self.ys[0], zs[0]]
        return aff


def scan_geometry(rng: np.random.Generator, A: Anatomy, res: str) -> ScanGeometry:
    cfg = RES[res]
    length = float(np.clip(rng.uniform(250, 400), A.z_apex + 10 - (A.z_dome_l - 75), 400.0))
    top = A.z_apex + rng.uniform(10, 35)
    bottom = top - length
    thin = float(rng.choice(cfg["thin"]))
    m = {1.0: int(rng.choice([3, 4, 5])), 1.25: int(rng.choice([3, 4])), 1.5: int(rng.choice([2, 3]))}.get(thin, 2)
    nz = int(np.floor(length / thin)) + 1
    nz -= nz % m  # whole thick slabs only
    zs = np.round(bottom + thin * np.arange(nz), 4)
    half_w = A.a * 1.1 + 12.0
    if res == "full":
        fov = float(np.clip(rng.uniform(2 * half_w, 2 * half_w + 80), 320, 500))
        dx = round(fov / 512, 6)
        nx = ny = 512
        cx, cy = A.bx + rng.uniform(-8, 8), A.by - 10 + rng.uniform(-8, 8)
    else:
        dx = round(float(rng.uniform(*cfg["xy"])), 4)
        nx = int(np.ceil(2 * half_w / dx / 8) * 8)
        ny = int(np.ceil(((A.b_ant + A.b_post) * 1.1 + 40.0) / dx / 8) * 8)
        cx, cy = A.bx, A.by - 0.05 * A.b_post - 10.0
    xs = cx + dx * ((nx - 1) / 2 - np.arange(nx))
    ys = cy + dx * ((ny - 1) / 2 - np.arange(ny))
    return ScanGeometry(np.round(xs, 4), np.round(ys, 4), zs, dx, thin, m)


def render_volumes(A: Anatomy, ops: list[Op], g: ScanGeometry, res: str, rng: np.random.Generator):
    """(thin int16, thick int16, thin seg uint8, thick seg uint8): HU volumes and their segmentations (see
    `segmentation.py`); rendering is chunked in z so full resolution fits in memory. A thick slab's segmentation
    is that of its middle thin slice (nearest neighbour, as a label map must be resampled)."""
    cfg = RES[res]
    sigma = float(rng.uniform(*cfg["noise"]))
    nz = len(g.zs_thin)
    thin = np.empty((len(g.xs), len(g.ys), nz), np.int16)
    thick = np.empty((len(g.xs), len(g.ys), nz // g.m), np.int16)
    seg_thin = np.empty(thin.shape, np.uint8)
    step = max(g.m, cfg["chunk"] - cfg["chunk"] % g.m)  # chunk boundaries on thick-slab boundaries
    for k0 in range(0, nz, step):
        k1 = min(nz, k0 + step)
        cv = Canvas.empty(g.xs, g.ys, g.zs_thin[k0:k1], g.dx)
        render_anatomy(cv, A)
        _table(cv, A)
        for op in ops:
            op.paint(cv)
        # Quantum noise inside the patient only: air outside stays flat, which real scanners nearly do after
        # their air clipping and which keeps the demo cohort compressible (noise in air triples its size).
        noise = rng.standard_normal(cv.hu.shape, dtype=np.float32) * sigma
        cv.hu += noise * (cv.labels != AIR)
        np.clip(cv.hu, -1024, 3071, out=cv.hu)
        thin[:, :, k0:k1] = np.rint(cv.hu)
        seg_thin[:, :, k0:k1] = cv.seg
        slab = cv.hu.reshape(cv.hu.shape[0], cv.hu.shape[1], -1, g.m).mean(3)
        thick[:, :, k0 // g.m : k1 // g.m] = np.rint(slab)
    seg_thick = np.ascontiguousarray(seg_thin[:, :, g.m // 2 : thick.shape[2] * g.m : g.m])
    return thin, thick, seg_thin, seg_thick


def _table(cv: Canvas, A: Anatomy) -> None:
    """The scanner couch under the patient: a curved plate, as on every real chest CT."""
    X = cv.xs[:, None, None]
    Y = cv.ys[None, :, None]
    floor = A.by - A.b_post * 1.06 - 6.0 + 0.0025 * (X - A.bx) ** 2
    w = soft(np.minimum(4.0 - np.abs(Y - floor), A.a * 0.9 - np.abs(X - A.bx)), cv.voxel)
    w = w * (cv.labels[:, :, :] != BODY)
    cv.blend((slice(None),) * 3, np.broadcast_to(w, cv.hu.shape), 150.0)
