"""Depth-cell geometry for inference: where each depth cell of a preprocessed scan lies in millimetres, and which
slice of the original scan is nearest to a depth.

A depth cell is one depth token of the window encoder: `Preprocessed.depth_cell` voxels along the image's D axis
(4 voxels = 12 mm for the RadFinder spec); cell c covers D voxels [c*k, (c+1)*k) of the cropped/padded image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..preprocess import cells
from ..preprocess.apply import Preprocessed


def _depth_world_axis(pre: Preprocessed) -> int:
    """The world axis (0 x, 1 y, 2 z) the image's D axis runs along."""
    return int(np.argmax(np.abs(pre.affine[:3, 2])))


def cell_data_extent(pre: Preprocessed) -> np.ndarray:
    """(C, 2) per depth cell: [first, end) D voxels of the cell that hold scan data (end <= first: padding only)."""
    n_cells = pre.image.shape[2] // pre.depth_cell
    return cells.cell_data_extent(np.arange(n_cells), pre.depth_cell, pre.depth_extent)


def cell_depths(pre: Preprocessed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per depth cell: world z (mm, RAS, superior +) of the centre of the cell's data part, the cell's full extent
    (C, 2) in world z (ascending edges), and whether the cell holds any scan data.

    The centre is taken in the middle of the image in-plane; for cells that are partly padding it is the centre of
    the part that holds data, so a reported depth always lies in the scan.
    """
    if _depth_world_axis(pre) != 2:
        raise ConfigError(
            "the preprocessing spec does not put the superior-inferior axis last (orientation "
            f"{pre.spec.orientation if pre.spec_json else '?'}): depth cells are not depths"
        )
    n_cells = pre.image.shape[2] // pre.depth_cell
    idx = np.arange(n_cells)
    has_data = cells.cells_in_scan(n_cells, pre.depth_cell, pre.depth_extent)
    world = cells.cell_centre_world(pre.affine, pre.image.shape, idx, pre.depth_cell, pre.depth_extent)
    h, w = (pre.image.shape[0] - 1) / 2.0, (pre.image.shape[1] - 1) / 2.0
    edges = cells.cell_bounds_world(pre.affine, idx, pre.depth_cell) + pre.affine[2, :2] @ np.array([h, w])
    return world[:, 2], edges, has_data


@dataclass(frozen=True)
class SourceSlice:
    """The slice of the original scan nearest a depth: `index` along array axis `axis` (the axis closest to S-I),
    its world z in mm, and the slice spacing along z."""

    axis: int
    index: int
    z_mm: float
    spacing_z_mm: float


def nearest_source_slice(source_shape, source_affine: np.ndarray, z_mm: float) -> SourceSlice:
    """Nearest slice (by world z, through the middle of the other two axes) along the source axis closest to z."""
    aff = np.asarray(source_affine, dtype=np.float64)
    cols = aff[:3, :3]
    axis = int(np.argmax(np.abs(cols[2]) / np.linalg.norm(cols, axis=0)))
    step = float(cols[2, axis])
    if abs(step) < 1e-9:
        raise ConfigError("the original scan has no axis along superior-inferior")
    centre = (np.asarray(source_shape, dtype=np.float64) - 1) / 2.0
    z_centre = float(aff[2, :3] @ centre + aff[2, 3])
    idx = int(np.clip(np.round((z_mm - z_centre) / step + centre[axis]), 0, int(source_shape[axis]) - 1))
    return SourceSlice(axis, idx, float(z_centre + (idx - centre[axis]) * step), abs(step))


def source_z_range(source_shape, source_affine: np.ndarray) -> tuple[float, float]:
    """World z extent (mm) of the original scan's voxel centres."""
    aff = np.asarray(source_affine, dtype=np.float64)
    corners = np.array([[i, j, k] for i in (0, source_shape[0] - 1) for j in (0, source_shape[1] - 1)
                        for k in (0, source_shape[2] - 1)], dtype=np.float64)  # fmt: skip
    z = corners @ aff[2, :3] + aff[2, 3]
    return float(z.min()), float(z.max())
