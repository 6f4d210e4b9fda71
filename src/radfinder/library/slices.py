"""Axial slices of a registered volume as PNG: display orientation, CT window presets, thumbnails.

Slices are indexed along the source array axis closest to superior-inferior (the axis `radfinder.api.localize`
reports `slice_index` on), so a depth from the model, a mined "image N" reference and the viewer agree. Each slice
is shown in radiological convention: anterior at the top, the patient's right on the viewer's left; pixels are
resampled (nearest neighbour) to square millimetres.

The PNG writer is a few lines of zlib (8-bit greyscale), so rendering needs no imaging library.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

WINDOWS: dict[str, tuple[float, float]] = {  # name -> (level, width) in HU
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
}


def png_gray(img: np.ndarray) -> bytes:
    """8-bit greyscale PNG of a (H, W) uint8 array."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img], axis=1).tobytes()  # filter byte 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 3)) + chunk(b"IEND", b"")


def apply_window(hu: np.ndarray, window: str) -> np.ndarray:
    if window not in WINDOWS:
        raise ConfigError(f"unknown window {window!r}; choose one of {', '.join(WINDOWS)}")
    level, width = WINDOWS[window]
    lo = level - width / 2.0
    return (np.clip((hu.astype(np.float32) - lo) / width, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class SliceLayout:
    """How to cut and orient axial slices of one volume (from its shape and affine)."""

    axis: int  # array axis closest to S-I: slices are indexed along it
    row_axis: int
    col_axis: int
    flip_rows: bool
    flip_cols: bool
    row_mm: float
    col_mm: float
    n_slices: int
    z_mm: tuple[float, ...]  # world z of each slice (through the middle of the plane)

    @classmethod
    def of(cls, shape, affine: np.ndarray) -> SliceLayout:
        aff = np.asarray(affine, dtype=np.float64)
        cols = aff[:3, :3]
        norms = np.linalg.norm(cols, axis=0)
        axis = int(np.argmax(np.abs(cols[2]) / norms))
        rest = [a for a in range(3) if a != axis]
        # The in-plane axis running most along x (R-L) becomes the image columns, the other (A-P) the rows.
        col_axis = max(rest, key=lambda a: abs(cols[0, a]) / norms[a])
        row_axis = rest[0] if rest[1] == col_axis else rest[1]
        centre = (np.asarray(shape, dtype=np.float64) - 1) / 2.0
        idx = np.arange(int(shape[axis]), dtype=np.float64)
        pts = np.repeat(centre[None], len(idx), axis=0)
        pts[:, axis] = idx
        z = pts @ aff[2, :3] + aff[2, 3]
        return cls(
            axis=axis, row_axis=row_axis, col_axis=col_axis,
            flip_rows=bool(cols[1, row_axis] > 0),  # RAS +y is anterior: anterior must be row 0
            flip_cols=bool(cols[0, col_axis] < 0),  # RAS +x is the patient's left: it goes to the viewer's right
            row_mm=float(norms[row_axis]), col_mm=float(norms[col_axis]), n_slices=int(shape[axis]),
            z_mm=tuple(float(v) for v in z),
        )  # fmt: skip

    def slice_hu(self, array: np.ndarray, index: int) -> np.ndarray:
        if not 0 <= index < self.n_slices:
            raise ConfigError(f"slice {index} out of range 0..{self.n_slices - 1}")
        plane = np.take(array, index, axis=self.axis)
        # np.take drops `axis`; the remaining axes keep their order.
        order = [a for a in range(3) if a != self.axis]
        plane = plane if order.index(self.row_axis) == 0 else plane.T
        if self.flip_rows:
            plane = plane[::-1]
        if self.flip_cols:
            plane = plane[:, ::-1]
        return plane

    def nearest_slice(self, z_mm: float) -> int:
        return int(np.argmin(np.abs(np.asarray(self.z_mm) - z_mm)))


def square_pixels(img: np.ndarray, row_mm: float, col_mm: float, max_side: int) -> np.ndarray:
    """Nearest-neighbour resample to square pixels, the longer side at most `max_side`."""
    h_mm, w_mm = img.shape[0] * row_mm, img.shape[1] * col_mm
    px = max(min(row_mm, col_mm), max(h_mm, w_mm) / max_side)
    h, w = max(1, round(h_mm / px)), max(1, round(w_mm / px))
    ri = np.minimum((np.arange(h) + 0.5) * px / row_mm, img.shape[0] - 1).astype(int)
    ci = np.minimum((np.arange(w) + 0.5) * px / col_mm, img.shape[1] - 1).astype(int)
    return img[ri][:, ci]


def render_slice(
    array: np.ndarray, layout: SliceLayout, index: int, window: str = "lung", max_side: int = 512
) -> bytes:
    plane = layout.slice_hu(array, index)
    return png_gray(square_pixels(apply_window(plane, window), layout.row_mm, layout.col_mm, max_side))


def thumbnail(array: np.ndarray, layout: SliceLayout, index: int | None = None, side: int = 128) -> bytes:
    """Lung-window PNG of one slice (default the middle one), longer side `side`."""
    return render_slice(array, layout, layout.n_slices // 2 if index is None else index, "lung", side)


def reference_slices(refs: list[dict], layout: SliceLayout, instances: list | None, series_number: int | None):
    """Attach a viewer slice to each mined reference (dicts from `SliceReference.to_dict`).

    DICOM input (per-instance geometry known, slices along the instance axis): image N is the instance with
    InstanceNumber N, exact when the reference names no series or the loaded one. Any other input (NIfTI,
    NRRD, ...) has no instance numbers: image N is taken as the N-th slice from the superior end, the usual
    order of an axial series, and marked `exact: false`. Images outside the volume get no slice.
    """
    by_number = {}
    if instances and len(instances) == layout.n_slices and layout.axis == 2:
        by_number = {int(inst.instance_number): i for i, inst in enumerate(instances)
                     if getattr(inst, "instance_number", None) is not None}  # fmt: skip
    top_down = np.argsort(-np.asarray(layout.z_mm), kind="stable")
    out = []
    for ref in refs:
        slices, exact = [], False
        if by_number and (ref.get("series") is None or series_number is None or ref["series"] == series_number):
            slices = [by_number[n] for n in ref["images"] if n in by_number]
            exact = bool(slices)
        if not slices:
            slices = [int(top_down[n - 1]) for n in ref["images"] if 1 <= n <= layout.n_slices]
        out.append({**ref, "slices": slices, "exact": exact})
    return out
