"""Turning the images of one series into a regular 3D grid, or explaining why they do not form one.

Order comes from geometry only: the position of each image along the slice normal (the cross product of the
ImageOrientationPatient directions). File names and InstanceNumber are never trusted for order.

Tolerances (all checks compare against the first image after sorting):
- orientation: every image's row/column direction within 1e-3 (about 0.06 degrees) of the first;
- pixel grid: identical Rows/Columns; PixelSpacing equal within 0.1 %;
- tilt: each image centre may sit at most TILT_TOLERANCE_PX (a quarter of the smallest pixel spacing) off the
  line through the first image along the normal. Beyond that the stack is gantry-tilted or oblique: an error,
  unless allow_tilt=True, which keeps the exact geometry with a sheared affine (then every image must lie within
  the same tolerance of the straight line from first to last);
- spacing: every gap between neighbouring images along the normal within max(SPACING_TOLERANCE_MM,
  SPACING_TOLERANCE_REL x median gap) of the median gap; bigger gaps are missing slices, listed in the error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import VolumeReadError
from .dicom_index import InstanceGeometry, SeriesInfo

ORIENTATION_TOLERANCE = 1e-3
SPACING_REL_TOLERANCE_PIXEL = 1e-3
TILT_TOLERANCE_PX = 0.25
SPACING_TOLERANCE_MM = 0.05
SPACING_TOLERANCE_REL = 0.02
DUPLICATE_TOLERANCE_MM = 1e-3


@dataclass
class Stack:
    instances: list[InstanceGeometry]  # in volume slice order (increasing position along the normal)
    affine: np.ndarray  # voxel (column, row, slice) -> RAS mm
    tilt_deg: float


def _pos(i: InstanceGeometry) -> np.ndarray:
    return np.asarray(i.position, dtype=np.float64)


def _check_uniform_grid(series: SeriesInfo, where: Path) -> None:
    ref = series.instances[0]
    sizes = {(i.rows, i.columns) for i in series.instances}
    if len(sizes) > 1:
        counts = {s: sum((i.rows, i.columns) == s for i in series.instances) for s in sizes}
        detail = ", ".join(f"{r}x{c}: {n} images" for (r, c), n in sorted(counts.items()))
        raise VolumeReadError(where, f"{series.label()} mixes image sizes (rows x columns): {detail}")
    for inst in series.instances:
        if inst.number_of_frames > 1:
            raise VolumeReadError(
                inst.path, f"multi-frame image ({inst.number_of_frames} frames); only single-frame series are read"
            )
        if not np.allclose(inst.pixel_spacing, ref.pixel_spacing, rtol=SPACING_REL_TOLERANCE_PIXEL, atol=0):
            raise VolumeReadError(
                where, f"{series.label()} mixes PixelSpacing: {list(ref.pixel_spacing)} in {ref.path.name}, "
                f"{list(inst.pixel_spacing)} in {inst.path.name}",
            )  # fmt: skip
        d_row = np.abs(np.subtract(inst.row_cosines, ref.row_cosines)).max()
        d_col = np.abs(np.subtract(inst.col_cosines, ref.col_cosines)).max()
        if max(d_row, d_col) > ORIENTATION_TOLERANCE:
            raise VolumeReadError(
                where, f"{series.label()} mixes image orientations: {inst.path.name} differs from {ref.path.name} "
                f"by {max(d_row, d_col):.4f} in ImageOrientationPatient (tolerance {ORIENTATION_TOLERANCE})",
            )  # fmt: skip


def _check_duplicates(series: SeriesInfo, ordered: list[InstanceGeometry], d: np.ndarray, where: Path) -> None:
    dup = np.flatnonzero(np.diff(d) < DUPLICATE_TOLERANCE_MM)
    if not len(dup):
        return
    k = int(dup[0])
    a, b = ordered[k], ordered[k + 1]
    temporal = {i.temporal_position for i in series.instances} - {None}
    acq = {i.acquisition_number for i in series.instances} - {None}
    hint = ""
    if len(temporal) > 1:
        hint = f"; {len(temporal)} TemporalPositionIdentifier values: a 4D (time-resolved) series"
    elif len(acq) > 1:
        hint = f"; {len(acq)} AcquisitionNumber values: several acquisitions (4D) in one series"
    raise VolumeReadError(
        where, f"{series.label()}: {len(dup)} slice positions hold more than one image (e.g. {a.path.name} and "
        f"{b.path.name} at {d[k]:.3f} mm along the normal){hint}; only 3D series are read",
    )  # fmt: skip


def _check_gaps(series: SeriesInfo, ordered: list[InstanceGeometry], d: np.ndarray, where: Path) -> float:
    gaps = np.diff(d)
    expected = float(np.median(gaps))
    tol = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_REL * expected)
    bad = np.flatnonzero(np.abs(gaps - expected) > tol)
    if len(bad):
        lines = []
        for k in bad[:6]:
            a, b = ordered[k], ordered[k + 1]
            missing = round(gaps[k] / expected) - 1
            what = f"~{missing} missing slice(s)" if missing >= 1 else "uneven spacing"
            lines.append(
                f"{gaps[k]:.3f} mm between image {a.instance_number} ({a.path.name}, {d[k]:.3f} mm) and image "
                f"{b.instance_number} ({b.path.name}, {d[k + 1]:.3f} mm): {what}"
            )
        more = f"; and {len(bad) - 6} more" if len(bad) > 6 else ""
        raise VolumeReadError(
            where, f"{series.label()}: slice spacing is not uniform (median {expected:.3f} mm, tolerance "
            f"{tol:.3f} mm); {len(bad)} irregular gap(s): " + "; ".join(lines) + more,
        )  # fmt: skip
    return expected


def stack_series(series: SeriesInfo, *, where: Path, allow_tilt: bool = False) -> Stack:
    """Sort, validate and place the images of `series` on one voxel grid. Raises VolumeReadError naming `where`."""
    missing = [i for i in series.instances if not i.has_geometry]
    if missing:
        raise VolumeReadError(
            missing[0].path, f"{series.label()}: {len(missing)} image(s) lack ImagePositionPatient, "
            "ImageOrientationPatient or PixelSpacing, so they cannot be placed in 3D",
        )  # fmt: skip
    _check_uniform_grid(series, where)
    ref = series.instances[0]
    normal = ref.normal
    d_all = np.array([_pos(i) @ normal for i in series.instances])
    order = np.argsort(d_all, kind="stable")
    ordered = [series.instances[k] for k in order]
    d = d_all[order]
    row_sp, col_sp = ref.pixel_spacing
    tol_mm = TILT_TOLERANCE_PX * min(row_sp, col_sp)
    affine = np.eye(4)
    affine[:3, 0] = np.array(ref.row_cosines) * col_sp
    affine[:3, 1] = np.array(ref.col_cosines) * row_sp
    affine[:3, 3] = _pos(ordered[0])

    if len(ordered) == 1:
        # One image has no neighbour to measure spacing from: use the declared spacing (as GDCM does), else the
        # thickness, else 1 mm.
        affine[:3, 2] = normal * abs(ref.spacing_between_slices or ref.slice_thickness or 1.0)
        return Stack(ordered, affine, 0.0)

    _check_duplicates(series, ordered, d, where)
    p0 = _pos(ordered[0])
    offsets = np.array([_pos(i) - p0 - (dd - d[0]) * normal for i, dd in zip(ordered, d, strict=True)])
    in_plane = np.linalg.norm(offsets, axis=1)
    tilt_deg = float(np.degrees(np.arctan2(in_plane[-1], d[-1] - d[0])))
    if in_plane.max() > tol_mm:
        if not allow_tilt:
            worst = int(np.argmax(in_plane))
            raise VolumeReadError(
                where, f"{series.label()}: images are not stacked along their normal (gantry tilt or oblique "
                f"stack, about {tilt_deg:.2f} degrees): {ordered[worst].path.name} sits {in_plane[worst]:.3f} mm "
                f"sideways, tolerance {tol_mm:.3f} mm ({TILT_TOLERANCE_PX} pixel); pass allow_tilt=True to keep "
                "the exact geometry as a sheared affine",
            )  # fmt: skip
        frac = (d - d[0]) / (d[-1] - d[0])
        line = p0 + frac[:, None] * (_pos(ordered[-1]) - p0)
        resid = np.linalg.norm(np.array([_pos(i) for i in ordered]) - line, axis=1)
        if resid.max() > tol_mm:
            worst = int(np.argmax(resid))
            raise VolumeReadError(
                where, f"{series.label()}: image centres do not lie on a straight line ({ordered[worst].path.name} "
                f"is {resid[worst]:.3f} mm off, tolerance {tol_mm:.3f} mm)",
            )  # fmt: skip
    _check_gaps(series, ordered, d, where)
    if in_plane.max() > tol_mm:
        affine[:3, 2] = (_pos(ordered[-1]) - p0) / (len(ordered) - 1)
    else:
        affine[:3, 2] = normal * (d[-1] - d[0]) / (len(ordered) - 1)
    return Stack(ordered, affine, tilt_deg)
