"""Pure geometry of a `PreprocessSpec`: where every preprocessed voxel lies, computed without touching voxels.

`plan_geometry(shape, affine, spec)` answers, for a source volume of that shape and affine:

* how its voxel axes are permuted/flipped to the spec orientation (``ornt``, ``reoriented_shape/affine``);
* the resampled ("spaced") grid: ``spaced_shape``, ``spaced_affine``;
* the centre crop / padding per axis (``crop_start``; negative = padding before);
* the final image grid: ``shape``, ``affine`` (voxel -> RAS+ mm) and the window grid ``grid``.

The reference miner and the depth-mapping code use it to place a DICOM plane (or any world point) in the
preprocessed image and its depth cells; `apply_spec` uses the very same plan, so the two can never disagree.

Rules (RadFinder / SPECTRE official transform, compat SPEC sections 8 and 13):

* spaced size per axis ``round((n - 1) * s_in / s_out + 1)`` with round half to even, at least 1;
* output voxel ``i`` samples reoriented input coordinate ``i * s_out / s_in`` (same origin);
* crop ``c = (n // w) * w`` (``n`` if that is 0), start ``n // 2 - c // 2``; then pad to ``w`` with
  ``before = (w - c) // 2``;
* with ``crop="none"`` nothing is cut and each axis is padded to the next multiple of the window, split the
  same way, so the windows cover the whole volume.

Oblique input (direction cosines more than `OBLIQUE_TOL` away from the axes after reorientation) is resampled
onto an axis-aligned grid in world space that covers the bounding box of the source voxel centres; the
official vectors do not cover that case (the official code keeps the obliquity in the affine instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import VolumeReadError
from .cells import cell_bounds_world
from .spec import PreprocessSpec

# |sin| of the largest angle between a reoriented voxel axis and its world axis still treated as axis-aligned.
# 1e-4 rad displaces a point 500 mm away by 0.05 mm, far below one 0.75 mm output voxel; DICOM direction cosines
# written in float32 (or with 6 decimals) are off by ~1e-6, so genuinely axial scans stay on the exact path.
OBLIQUE_TOL = 1e-4

_CODE_AXIS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def round_half_even(x: float) -> int:
    """numpy's rounding (ties to even), which the official output-size rule uses."""
    return int(np.round(x))


def target_directions(orientation: str) -> np.ndarray:
    """(3, 3) matrix whose column k is the unit world (RAS) vector that output axis k points along."""
    out = np.zeros((3, 3))
    for k, code in enumerate(orientation.upper()):
        axis, sign = _CODE_AXIS[code]
        out[axis, k] = sign
    return out


def _reorientation(affine: np.ndarray, orientation: str) -> np.ndarray:
    """nibabel-style ornt (3, 2): input axis i becomes output axis ornt[i, 0], flipped when ornt[i, 1] == -1."""
    import nibabel.orientations as nio

    start = nio.io_orientation(affine)
    end = nio.axcodes2ornt(tuple(orientation.upper()))
    return nio.ornt_transform(start, end)


def _reoriented_affine(affine: np.ndarray, ornt: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    import nibabel.orientations as nio

    return affine @ nio.inv_ornt_aff(ornt, shape)


def _crop_plan(n: int, w: int, mode: str) -> tuple[int, int]:
    """(start, final size) along one axis; start < 0 means that many padding voxels before the data."""
    if mode == "none":
        target = -(-n // w) * w
        return -((target - n) // 2), target
    c = (n // w) * w or n
    start = n // 2 - c // 2
    if c < w:
        return start - (w - c) // 2, w
    return start, c


@dataclass(frozen=True)
class Geometry:
    """Where every voxel of the preprocessed image lies. All affines map voxel index -> RAS+ world mm."""

    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    ornt: np.ndarray  # (3, 2) source axis -> reoriented axis and flip (nibabel convention)
    reoriented_shape: tuple[int, int, int]
    reoriented_affine: np.ndarray
    oblique: bool
    spaced_shape: tuple[int, int, int]
    spaced_affine: np.ndarray
    crop_start: tuple[int, int, int]  # per axis, in spaced voxels; negative = padding before the data
    shape: tuple[int, int, int]  # final image (H, W, D), a multiple of the window
    affine: np.ndarray  # final image voxel -> world
    grid: tuple[int, int, int]  # (Hg, Wg, Dg)
    window: tuple[int, int, int]
    depth_cell: int  # voxels per depth cell along D: window[2] / spec.depth_tokens_per_window

    @property
    def n_windows(self) -> int:
        return int(np.prod(self.grid))

    @property
    def n_depth_cells(self) -> int:
        return self.shape[2] // self.depth_cell

    @property
    def valid_box(self) -> tuple[tuple[int, int], ...]:
        """Per axis [lo, hi) of the final image holding resampled data (the rest is padding)."""
        return tuple(
            (max(0, -s), min(f, n - s)) for s, f, n in zip(self.crop_start, self.shape, self.spaced_shape, strict=True)
        )

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """World RAS mm of final-image voxel coordinates (..., 3) (fractional allowed)."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Fractional final-image voxel coordinates of world points (..., 3); may fall outside the image."""
        xyz = np.asarray(xyz, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return xyz @ inv[:3, :3].T + inv[:3, 3]

    def source_to_voxel(self, ijk: np.ndarray) -> np.ndarray:
        """Final-image coordinates of source-volume voxel coordinates (..., 3)."""
        ijk = np.asarray(ijk, dtype=np.float64)
        world = ijk @ self.source_affine[:3, :3].T + self.source_affine[:3, 3]
        return self.world_to_voxel(world)

    def depth_cell_of_voxel(self, d: np.ndarray | float) -> np.ndarray:
        """Depth cell of a (fractional) D coordinate: cell c covers voxels [c*k, (c+1)*k). Out-of-range values
        (< 0 or >= n_depth_cells) mean the point lies outside the image. A point on a cell boundary (to within
        1e-6 of a cell, far below any scanner's precision) belongs to the upper cell, so float noise from different
        but equivalent transform chains cannot split ties between two answers."""
        return np.floor((np.asarray(d, dtype=np.float64) + 0.5) / self.depth_cell + 1e-6).astype(np.int64)

    def depth_cell_of_world(self, xyz: np.ndarray) -> np.ndarray:
        """Depth cell of world points (..., 3): where a DICOM plane (its position) lands along D."""
        return self.depth_cell_of_voxel(self.world_to_voxel(xyz)[..., 2])

    def depth_cell_bounds_mm(self, cell: int) -> tuple[float, float]:
        """World extent along D's world axis covered by depth cell `cell` (voxel edges, ascending)."""
        lo, hi = cell_bounds_world(self.affine, cell, self.depth_cell)
        return float(lo), float(hi)


def _check_input(shape, affine) -> tuple[tuple[int, int, int], np.ndarray]:
    shape = tuple(int(s) for s in shape)
    affine = np.asarray(affine, dtype=np.float64)
    if len(shape) != 3 or min(shape) < 1:
        raise VolumeReadError(None, f"cannot preprocess a volume of shape {shape}: need three non-empty axes")
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise VolumeReadError(None, "volume affine must be a finite 4x4 matrix")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeReadError(None, f"volume affine is singular:\n{affine}")
    return shape, affine


def plan_geometry(shape, affine, spec: PreprocessSpec) -> Geometry:
    """Plan the preprocessing of a volume of `shape` with voxel->RAS affine `affine` under `spec`.

    Touches no voxels, so it is cheap enough to call per DICOM instance or per report sentence.
    """
    shape, affine = _check_input(shape, affine)
    ornt = _reorientation(affine, spec.orientation)
    perm = [0, 0, 0]
    for i, (ax, _flip) in enumerate(ornt):
        perm[int(ax)] = shape[i]
    reo_shape = tuple(perm)
    reo_affine = _reoriented_affine(affine, ornt, shape)

    dirs = target_directions(spec.orientation)
    cols = reo_affine[:3, :3]
    s_in = np.linalg.norm(cols, axis=0)
    # Component of each reoriented column perpendicular to its target axis, relative to its length.
    off = np.linalg.norm(cols - dirs * np.sum(cols * dirs, axis=0), axis=0) / s_in
    oblique = bool(np.max(off) > OBLIQUE_TOL)
    s_out = np.asarray(spec.spacing, dtype=np.float64)

    if not oblique:
        spaced_shape = tuple(
            max(1, round_half_even((n - 1) * si / so + 1)) for n, si, so in zip(reo_shape, s_in, s_out, strict=True)
        )
        origin = reo_affine[:3, 3].copy()
    else:
        # Bounding box of the source voxel centres, measured along the target axes.
        corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
        world = corners @ affine[:3, :3].T + affine[:3, 3]
        proj = world @ dirs  # (8, 3): coordinate along each output axis
        lo, hi = proj.min(axis=0), proj.max(axis=0)
        spaced_shape = tuple(
            max(1, round_half_even((h - low) / so + 1)) for low, h, so in zip(lo, hi, s_out, strict=True)
        )
        origin = dirs @ lo

    spaced_affine = np.eye(4)
    spaced_affine[:3, :3] = dirs * s_out
    spaced_affine[:3, 3] = origin

    starts, final = [], []
    for n, w in zip(spaced_shape, spec.window, strict=True):
        s, f = _crop_plan(n, w, spec.crop)
        starts.append(s)
        final.append(f)
    out_affine = spaced_affine.copy()
    out_affine[:3, 3] = origin + spaced_affine[:3, :3] @ np.asarray(starts, dtype=np.float64)
    grid = tuple(f // w for f, w in zip(final, spec.window, strict=True))
    return Geometry(
        source_shape=shape,
        source_affine=affine,
        ornt=ornt,
        reoriented_shape=reo_shape,
        reoriented_affine=reo_affine,
        oblique=oblique,
        spaced_shape=spaced_shape,
        spaced_affine=spaced_affine,
        crop_start=tuple(starts),
        shape=tuple(final),
        affine=out_affine,
        grid=grid,
        window=tuple(spec.window),
        depth_cell=spec.window[2] // spec.depth_tokens_per_window,
    )
