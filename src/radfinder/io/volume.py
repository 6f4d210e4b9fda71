"""The `Volume`: HU voxels plus the geometry that places every voxel in patient space.

One convention everywhere: `affine` maps a voxel index (i, j, k, 1) of `array` to patient world coordinates in
millimetres in **RAS+** (nibabel's world space): +x toward the patient's Right, +y Anterior, +z Superior.
A DICOM (LPS) position (x, y, z) is (-x, -y, z) here. Voxel centres sit at integer indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def affine_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along each array axis: the lengths of the affine's first three columns."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0))


def affine_axcodes(affine: np.ndarray) -> str:
    """Orientation codes of the array axes, e.g. "LPS" means axis 0 points to patient Left, 1 Posterior, 2 Superior."""
    import nibabel.orientations as nio

    return "".join(nio.aff2axcodes(np.asarray(affine, dtype=np.float64)))


@dataclass
class Volume:
    """A 3D CT volume in Hounsfield units.

    array: (I, J, K) voxels in HU. int16 when the stored values are exact integer HU (keeps memory at the
        size of the file), float32 otherwise.
    affine: (4, 4) float64, voxel index -> RAS+ world mm.
    meta: where it came from (``source``, ``format``), and format specifics: for DICOM the chosen series,
        the other series found and a per-instance geometry index (see ``radfinder.io.dicom``).
    """

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3D, got shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return affine_spacing(self.affine)

    @property
    def orientation(self) -> str:
        return affine_axcodes(self.affine)

    def world_of(self, ijk: np.ndarray) -> np.ndarray:
        """World RAS mm of voxel indices (..., 3)."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]
