"""Place a referenced DICOM image ("series 4, image 38") in the depth cells of a preprocessed training volume.

The mapping is geometric (method notes 1.2): every pixel centre of the referenced image plane is carried into the
final (reoriented, resampled, cropped) voxel grid of the training volume through
``inv(geometry.affine) @ instance.plane_affine()``; pixels that land inside the cropped volume's data extent
(in-plane and along depth) are counted per depth cell, and the cell that receives the most of them is the target
(``argmax``; ties go to the lower cell). A plane with no pixel inside is ``outside_crop``. Because everything goes
through world coordinates, the referenced series may be another reconstruction than the training volume (other
slice spacing, reversed instance order, other field of view) and may even be a reformat in another plane.

Conventions, shared with `Geometry.depth_cell_of_voxel` and the compat spec ("bin d2 covers cropped z-voxels
[4*d2, 4*d2+4)"): final voxel ``i`` covers the continuous coordinates [i - 0.5, i + 0.5), so depth cell
``c = floor((d + 0.5) / depth_cell)``. "Inside" means inside `Geometry.valid_box`, the part of the final image
that holds resampled data: the cropped volume without any zero padding added to reach a whole window (a plane
that only meets padding points at nothing the model sees).

Speed: images with more than `max_pixels` pixels are subsampled on a regular grid (the same stride along rows
and columns, each sample at the centre of its stride block). The default, 512 x 512, keeps every pixel of a
standard CT image; a 1024 x 1024 image is sampled every second pixel. For an axial plane all pixels share one
depth, so the sampling cannot change the answer; for oblique or reformatted planes it changes per-cell counts by
at most one stride row per cell boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..preprocess import cells

if TYPE_CHECKING:
    from ..io.dicom_index import InstanceGeometry, StudyIndex
    from ..preprocess.geometry import Geometry

DEFAULT_MAX_PIXELS = 512 * 512

# Why a (series, image) could not be placed, in pipeline order: a reference that fails for several images or
# volumes is counted under the reason that got furthest down this list (see `furthest_reason`).
DROP_REASONS = (
    "no_series",  # a bare "image N" with no series named earlier in the report
    "empty_snippet",  # nothing left of the sentence once the reference is cut out
    "no_volume",  # no training volume (NIfTI) found for the report
    "bad_volume",  # the training volume's header cannot be read
    "no_dicom",  # no (readable) DICOM study folder for the report
    "unknown_series",  # the study has no series with that SeriesNumber
    "missing_image",  # the series has no image with that InstanceNumber
    "ambiguous_image",  # two different images share the SeriesNumber and InstanceNumber
    "no_geometry",  # the image has no ImagePositionPatient / ImageOrientationPatient / PixelSpacing
    "outside_crop",  # the image plane misses the cropped training volume
)


def furthest_reason(reasons: list[str]) -> str:
    """The reason that got furthest in `DROP_REASONS` order (unknown names count as the furthest)."""
    order = {r: i for i, r in enumerate(DROP_REASONS)}
    return max(reasons, key=lambda r: order.get(r, len(order)))


@dataclass(frozen=True)
class PlanePlacement:
    """Where one image plane lands in a preprocessed volume.

    depth_cell: the target cell, None when no sampled pixel falls inside the crop (``outside_crop``).
    depth_mm: the plane centre's position along the depth axis, in mm from the start edge of cell 0 (the one meaning
    of ``depth_mm`` in pairs and localization metrics); it may lie outside the volume. world_z_mm: world (RAS) z of
    the plane centre. cell_world_z_mm: world z of the chosen cell's centre (at the centre of the final image
    in-plane).
    n_sampled / n_inside: pixels sampled / of those inside the crop; share: fraction of the inside pixels that
    fell in the chosen cell (1.0 for an axial plane).
    """

    depth_cell: int | None
    world_z_mm: float
    cell_world_z_mm: float | None
    depth_mm: float
    n_sampled: int
    n_inside: int
    share: float

    @property
    def resolved(self) -> bool:
        return self.depth_cell is not None


def sample_stride(rows: int, columns: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Stride (same along rows and columns) that keeps at most `max_pixels` samples of a rows x columns image."""
    if rows < 1 or columns < 1:
        raise ValueError(f"image size must be positive, got {rows} x {columns}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    s = max(1, int(np.ceil(np.sqrt(rows * columns / max_pixels))))
    while -(-rows // s) * -(-columns // s) > max_pixels:
        s += 1
    return s


def _samples(n: int, stride: int) -> np.ndarray:
    """Pixel indices 0..n-1 taken every `stride`, each at the middle of its block (clipped into the image)."""
    return np.minimum(np.arange(0, n, stride) + (stride - 1) // 2, n - 1).astype(np.float64)


def cell_centre_world(geom: Geometry, cell: int) -> np.ndarray:
    """World (RAS) point at the centre of depth cell `cell`, in the middle of the final image in-plane."""
    return cells.cell_centre_world(geom.affine, geom.shape, cell, geom.depth_cell)


def place_plane(
    plane_affine: np.ndarray, rows: int, columns: int, geom: Geometry, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> PlanePlacement:
    """Place an image plane given by its 4x4 (column, row, normal, 1) -> RAS mm affine (see module doc)."""
    plane_affine = np.asarray(plane_affine, dtype=np.float64)
    m = np.linalg.inv(geom.affine) @ plane_affine  # (column, row, 0, 1) -> final voxel coordinates
    stride = sample_stride(rows, columns, max_pixels)
    c = _samples(columns, stride)[None, :]
    r = _samples(rows, stride)[:, None]
    inside = np.ones((r.shape[0], c.shape[1]), dtype=bool)
    depth = None
    for axis, (lo, hi) in enumerate(geom.valid_box):
        v = m[axis, 0] * c + m[axis, 1] * r + m[axis, 3]
        inside &= (v >= lo - 0.5) & (v < hi - 0.5)
        if axis == 2:
            depth = v
    centre = plane_affine @ np.array([(columns - 1) / 2, (rows - 1) / 2, 0.0, 1.0])
    d_centre = float((m @ np.array([(columns - 1) / 2, (rows - 1) / 2, 0.0, 1.0]))[2])
    spacing_d = float(np.linalg.norm(geom.affine[:3, 2]))
    n_inside = int(inside.sum())
    common = dict(world_z_mm=float(centre[2]), depth_mm=(d_centre + 0.5) * spacing_d, n_sampled=int(inside.size))
    if n_inside == 0:
        return PlanePlacement(None, cell_world_z_mm=None, n_inside=0, share=0.0, **common)
    cells = geom.depth_cell_of_voxel(np.broadcast_to(depth, inside.shape)[inside])
    counts = np.bincount(cells, minlength=geom.n_depth_cells)
    best = int(np.argmax(counts))
    return PlanePlacement(
        best,
        cell_world_z_mm=float(cell_centre_world(geom, best)[2]),
        n_inside=n_inside,
        share=float(counts[best] / n_inside),
        **common,
    )


def place_instance(
    inst: InstanceGeometry, geom: Geometry, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> PlanePlacement | None:
    """`place_plane` for a DICOM image from a `StudyIndex`; None when the image has no usable geometry."""
    if not inst.has_geometry or not inst.rows or not inst.columns:
        return None
    return place_plane(inst.plane_affine(), inst.rows, inst.columns, geom, max_pixels=max_pixels)


@dataclass(frozen=True)
class Resolution:
    """Outcome of resolving one (series, image) against one training volume: a placement or a drop reason."""

    placement: PlanePlacement | None
    reason: str | None
    instance: InstanceGeometry | None = None

    @property
    def resolved(self) -> bool:
        return self.placement is not None


class DepthMapper:
    """Resolves (series, image) of one study against one training volume's preprocessing geometry.

    `index` is the study's DICOM header index (None when the study has no DICOM: everything is ``no_dicom``).
    Results are cached per (series, image): reports often cite the same image twice.
    """

    def __init__(self, index: StudyIndex | None, geom: Geometry, *, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.index = index
        self.geom = geom
        self.max_pixels = max_pixels
        self._series = set(index.series_numbers()) if index is not None else set()
        self._cache: dict[tuple[int | None, int], Resolution] = {}

    def resolve(self, series: int | None, image: int) -> Resolution:
        key = (series, int(image))
        if key not in self._cache:
            self._cache[key] = self._resolve(series, int(image))
        return self._cache[key]

    def _resolve(self, series: int | None, image: int) -> Resolution:
        if series is None:
            return Resolution(None, "no_series")
        if self.index is None:
            return Resolution(None, "no_dicom")
        if int(series) not in self._series:
            return Resolution(None, "unknown_series")
        found = self.index.lookup_all(int(series), image)
        if not found:
            return Resolution(None, "missing_image")
        if len({i.sop_instance_uid for i in found}) > 1:
            return Resolution(None, "ambiguous_image")
        inst = found[0]
        placement = place_instance(inst, self.geom, max_pixels=self.max_pixels)
        if placement is None:
            return Resolution(None, "no_geometry", inst)
        if not placement.resolved:
            return Resolution(None, "outside_crop", inst)
        return Resolution(placement, None, inst)
