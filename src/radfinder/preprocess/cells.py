"""Depth cells: the one implementation of their bounds, centres and data extent (everything else calls these).

A depth cell is one depth token of the window encoder: `k` voxels along the preprocessed image's D axis (axis 2),
k = window[2] / spec.depth_tokens_per_window (4 voxels = 12 mm for the RadFinder spec). Final voxel i covers the
continuous coordinates [i - 0.5, i + 0.5), so cell c covers [c*k - 0.5, (c+1)*k - 0.5) and its centre is at
c*k + (k - 1)/2. The "data extent" [lo, hi) is the part of D that holds resampled scan data (`Geometry.valid_box`);
the rest is padding added to reach whole windows. In mm along the cell axis from the start edge of cell 0 (the
``depth_mm`` of pairs and metrics), cell c spans [c, c + 1) * cell_mm and its centre is (c + 0.5) * cell_mm.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cell_bounds_world", "cell_centre_mm", "cell_centre_voxel", "cell_centre_world", "cell_data_extent",
           "cells_in_scan"]


def _cells(cells) -> np.ndarray:
    return np.asarray(cells, dtype=np.float64)


def cell_centre_voxel(cells, k: int, extent: tuple[float, float] | None = None) -> np.ndarray:
    """D coordinate of the centre of cells `cells`; with `extent` (lo, hi), the centre of the part of each cell that
    holds data (the full cell's centre where it holds none)."""
    c = _cells(cells)
    if extent is None:
        return c * k + (k - 1) / 2.0
    ext = cell_data_extent(c.astype(np.int64), k, extent)
    has = ext[..., 1] > ext[..., 0]
    return np.where(has, (ext[..., 0] + ext[..., 1] - 1) / 2.0, c * k + (k - 1) / 2.0)


def cell_centre_mm(cells, cell_mm: float) -> np.ndarray:
    """Centre of cells in ``depth_mm`` terms (mm along the cell axis from the start edge of cell 0)."""
    return (_cells(cells) + 0.5) * float(cell_mm)


def cell_centre_world(affine: np.ndarray, shape, cells, k: int,
                      extent: tuple[float, float] | None = None) -> np.ndarray:
    """(..., 3) world (RAS mm) point at the centre of each cell, in the middle of the image in-plane."""
    aff = np.asarray(affine, dtype=np.float64)
    d = cell_centre_voxel(cells, k, extent)
    ijk = np.stack([np.full_like(d, (shape[0] - 1) / 2.0), np.full_like(d, (shape[1] - 1) / 2.0), d], axis=-1)
    return ijk @ aff[:3, :3].T + aff[:3, 3]


def cell_bounds_world(affine: np.ndarray, cells, k: int) -> np.ndarray:
    """(..., 2) extent of each cell along the world axis the D axis runs along most (voxel edges, ascending)."""
    aff = np.asarray(affine, dtype=np.float64)
    c = _cells(cells)
    d = np.stack([c * k - 0.5, (c + 1) * k - 0.5], axis=-1)
    step = aff[:3, 2]
    axis = int(np.argmax(np.abs(step)))
    return np.sort(aff[axis, 3] + d * step[axis], axis=-1)


def cell_data_extent(cells, k: int, extent: tuple[float, float]) -> np.ndarray:
    """(..., 2) per cell: [first, end) D voxels of the cell that hold data (end <= first: padding only)."""
    c = np.asarray(cells, dtype=np.int64)
    lo, hi = extent
    return np.stack([np.maximum(c * k, lo), np.minimum(c * k + k, hi)], axis=-1)


def cells_in_scan(n_cells: int, k: int, extent: tuple[float, float] | None) -> np.ndarray:
    """(n_cells,) bool: the cell holds at least one voxel of scan data (all True when the extent is unknown)."""
    if extent is None:
        return np.ones(n_cells, dtype=bool)
    ext = cell_data_extent(np.arange(n_cells), k, extent)
    return ext[:, 1] > ext[:, 0]
