"""`apply_spec`: the one preprocessing function used by training, evaluation, feature extraction and inference."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import VolumeReadError
from ..io.volume import Volume
from .cells import cell_bounds_world
from .geometry import Geometry, plan_geometry
from .resample import ValueMap, intensity_f32, resample_separable, resample_world
from .spec import PreprocessSpec


@dataclass
class Preprocessed:
    """A volume after `apply_spec`: spec orientation (RAS), spec spacing, centre-cropped/padded to whole windows.

    image: (H, W, D) in spec.dtype; affine: (4, 4) voxel of `image` -> RAS+ mm (maps depth cells back to mm);
    grid: (Hg, Wg, Dg) windows; spaced_shape: size after resampling, before crop/pad; crop_start: per axis,
    where `image` starts in the spaced grid (negative = padding); source_shape / source_affine: the input.
    """

    image: np.ndarray
    affine: np.ndarray
    grid: tuple[int, int, int]
    spec_hash: str
    spaced_shape: tuple[int, int, int]
    crop_start: tuple[int, int, int]
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    window: tuple[int, int, int] = (128, 128, 32)
    depth_cell: int = 4
    spec_json: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> PreprocessSpec:
        if not self.spec_json:
            raise ValueError("this Preprocessed carries no spec JSON")
        return PreprocessSpec.model_validate_json(self.spec_json)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def n_windows(self) -> int:
        return int(np.prod(self.grid))

    def windows(self) -> np.ndarray:
        """(N, 1, wh, ww, wd) windows, H slowest and D fastest: n = (h * Wg + w) * Dg + d (a copy)."""
        (hg, wg, dg), (wh, ww, wd) = self.grid, self.window
        x = self.image.reshape(hg, wh, wg, ww, dg, wd).transpose(0, 2, 4, 1, 3, 5)
        return np.ascontiguousarray(x).reshape(hg * wg * dg, 1, wh, ww, wd)

    def window_locations(self) -> np.ndarray:
        """(3, N) int64 voxel offsets of each window in `image`, in `windows()` order."""
        hh, ww, dd = np.meshgrid(
            *(np.arange(g) * w for g, w in zip(self.grid, self.window, strict=True)), indexing="ij"
        )
        return np.stack([hh.ravel(), ww.ravel(), dd.ravel()]).astype(np.int64)

    def depth_cell_bounds_mm(self, cell: int) -> tuple[float, float]:
        """World extent (mm, ascending) along D covered by depth cell `cell` = voxels [cell*k, (cell+1)*k)."""
        lo, hi = cell_bounds_world(self.affine, cell, self.depth_cell)
        return float(lo), float(hi)

    @property
    def depth_extent(self) -> tuple[int, int]:
        """[lo, hi) of the D axis holding scan data (the rest is padding)."""
        start = self.crop_start[2]
        return max(0, -start), min(self.image.shape[2], self.spaced_shape[2] - start)

    def header(self) -> dict[str, Any]:
        """Everything but the voxels, JSON-serialisable (the cache stores it next to the image)."""
        return {
            "shape": list(self.image.shape),
            "dtype": str(self.image.dtype),
            "affine": self.affine.tolist(),
            "grid": list(self.grid),
            "spec_hash": self.spec_hash,
            "spec": json.loads(self.spec_json) if self.spec_json else None,
            "spaced_shape": list(self.spaced_shape),
            "crop_start": list(self.crop_start),
            "source_shape": list(self.source_shape),
            "source_affine": self.source_affine.tolist(),
            "window": list(self.window),
            "depth_cell": self.depth_cell,
            "meta": self.meta,
        }

    @classmethod
    def from_header(cls, header: dict[str, Any], image: np.ndarray) -> Preprocessed:
        return cls(
            image=image,
            affine=np.asarray(header["affine"], dtype=np.float64),
            grid=tuple(header["grid"]),
            spec_hash=header["spec_hash"],
            spaced_shape=tuple(header["spaced_shape"]),
            crop_start=tuple(header["crop_start"]),
            source_shape=tuple(header["source_shape"]),
            source_affine=np.asarray(header["source_affine"], dtype=np.float64),
            window=tuple(header["window"]),
            depth_cell=int(header["depth_cell"]),
            spec_json=json.dumps(header["spec"], sort_keys=True, separators=(",", ":")) if header.get("spec") else "",
            meta=dict(header.get("meta") or {}),
        )


def _finisher(spec: PreprocessSpec, intensity_after: bool):
    def finish(x: np.ndarray) -> np.ndarray:
        x32 = x.astype(np.float32)  # the official resampler returns float32; round there first
        if intensity_after:
            x32 = intensity_f32(x32, spec)
        return x32

    return finish


def _reoriented_view(array: np.ndarray, geom: Geometry) -> np.ndarray:
    import nibabel.orientations as nio

    return nio.apply_orientation(array, geom.ornt)


def _resample(volume: Volume, spec: PreprocessSpec, geom: Geometry, out: np.ndarray, box, offset) -> None:
    after = spec.intensity_order == "after"
    values = ValueMap(volume.array.dtype, spec, apply_intensity=not after)
    finish = _finisher(spec, after)
    nearest = spec.interpolation == "nearest"
    if geom.oblique:
        resample_world(volume.array, geom.source_affine, geom.spaced_affine, box, out, offset, values, finish, nearest)
        return
    src = _reoriented_view(volume.array, geom)
    s_in = np.linalg.norm(geom.reoriented_affine[:3, :3], axis=0)
    ratios = tuple(float(so / si) for so, si in zip(spec.spacing, s_in, strict=True))
    resample_separable(src, ratios, box, out, offset, values, finish, nearest)


def _check_volume(volume: Volume) -> None:
    arr = volume.array
    if arr.dtype.kind not in "iufb":
        raise VolumeReadError(volume.meta.get("source"), f"voxel type {arr.dtype} is not numeric")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise VolumeReadError(volume.meta.get("source"), "volume contains NaN or infinite voxels")


def apply_spec(volume: Volume, spec: PreprocessSpec) -> Preprocessed:
    """Reorient, map HU, resample, cast, centre-crop/pad: the official order (compat SPEC section 8).

    Only voxels kept by the crop are computed; padding holds spec.pad_value.
    """
    _check_volume(volume)
    geom = plan_geometry(volume.shape, volume.affine, spec)
    out = np.full(geom.shape, spec.pad_value, dtype=np.dtype(spec.dtype))
    box = tuple(
        (max(0, s), min(n, s + f)) for s, n, f in zip(geom.crop_start, geom.spaced_shape, geom.shape, strict=True)
    )
    _resample(volume, spec, geom, out, box, geom.crop_start)
    return Preprocessed(
        image=out,
        affine=geom.affine,
        grid=geom.grid,
        spec_hash=spec.hash(),
        spaced_shape=geom.spaced_shape,
        crop_start=geom.crop_start,
        source_shape=geom.source_shape,
        source_affine=geom.source_affine,
        window=geom.window,
        depth_cell=geom.depth_cell,
        spec_json=spec.canonical_json(),
        meta={"source": str(volume.meta["source"])} if volume.meta.get("source") else {},
    )


def apply_spec_labels(labels: Volume, spec: PreprocessSpec) -> np.ndarray:
    """A label map (segmentation) on the grid `apply_spec` gives its image: same orientation, spacing and
    crop/pad, nearest-neighbour sampling, no intensity mapping, padding 0, the input's integer type (8 or 16 bit).
    The label map must share its image's geometry (shape and affine), as TotalSegmentator's output does."""
    arr = labels.array
    if arr.dtype.kind not in "iub" or arr.dtype.itemsize > 2 or (arr.size and arr.min() < 0):
        raise VolumeReadError(labels.meta.get("source"), f"a label map needs 8/16-bit ids >= 0, got {arr.dtype}")
    src = arr.astype(np.uint8 if arr.dtype.itemsize == 1 or arr.max() <= 255 else np.uint16, copy=False)
    geom = plan_geometry(labels.shape, labels.affine, spec)
    out = np.zeros(geom.shape, dtype=src.dtype)
    box = tuple(
        (max(0, s), min(n, s + f)) for s, n, f in zip(geom.crop_start, geom.spaced_shape, geom.shape, strict=True)
    )
    values = ValueMap(src.dtype, spec, apply_intensity=False)  # identity table: ids pass through unchanged

    def finish(v: np.ndarray) -> np.ndarray:
        return v.astype(src.dtype)

    if geom.oblique:
        resample_world(src, geom.source_affine, geom.spaced_affine, box, out, geom.crop_start, values, finish, True)
    else:
        s_in = np.linalg.norm(geom.reoriented_affine[:3, :3], axis=0)
        ratios = tuple(float(so / si) for so, si in zip(spec.spacing, s_in, strict=True))
        resample_separable(_reoriented_view(src, geom), ratios, box, out, geom.crop_start, values, finish, True)
    return out


def spaced_volume(volume: Volume, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """The whole resampled volume in float32 before cast and crop, with its affine (for checks and plots)."""
    _check_volume(volume)
    geom = plan_geometry(volume.shape, volume.affine, spec)
    out = np.zeros(geom.spaced_shape, dtype=np.float32)
    _resample(volume, spec, geom, out, tuple((0, n) for n in geom.spaced_shape), (0, 0, 0))
    return out, geom.spaced_affine
