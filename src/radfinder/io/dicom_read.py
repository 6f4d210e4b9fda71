"""Read one DICOM series (from a file, a series folder or a whole study folder) into a `Volume`.

Headers are read first (no pixels) to choose and validate the series; pixels are decoded only once the
geometry is known to be a regular grid, in parallel threads, straight into the output array.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import VolumeReadError
from .dicom_index import InstanceGeometry, _workers, group_series, is_dicom_file, read_header, scan_headers
from .dicom_select import select_series
from .dicom_stack import stack_series
from .volume import Volume

_INT16 = np.iinfo(np.int16)


def _decode(inst: InstanceGeometry) -> np.ndarray:
    """Stored pixel values of one image, shape (rows, columns). Compressed syntaxes go through pydicom's
    decoders (pylibjpeg plugins for JPEG, JPEG-LS, JPEG 2000; pydicom's own RLE)."""
    import pydicom

    try:
        ds = pydicom.dcmread(inst.path, force=True)
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise VolumeReadError(inst.path, f"{ds.SamplesPerPixel} samples per pixel (colour); CT is greyscale")
        if "PixelData" not in ds:
            raise VolumeReadError(inst.path, "no PixelData element (file truncated or not an image)")
        arr = ds.pixel_array
    except VolumeReadError:
        raise
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) if "ds" in locals() else None
        syntax = f" ({ts.name})" if ts is not None else ""
        raise VolumeReadError(inst.path, f"cannot decode pixel data{syntax}: {exc}") from exc
    if arr.shape != (inst.rows, inst.columns):
        raise VolumeReadError(inst.path, f"decoded pixel array has shape {arr.shape}, header says "
                                         f"{inst.rows}x{inst.columns}")  # fmt: skip
    return arr


def _hu_exact_int(instances: list[InstanceGeometry]) -> bool:
    return all(float(i.rescale_slope).is_integer() and float(i.rescale_intercept).is_integer() for i in instances)


def _read_pixels(instances: list[InstanceGeometry], workers: int | None) -> np.ndarray:
    """(columns, rows, slices) HU: stored * RescaleSlope + RescaleIntercept, applied here and only here
    (pydicom's pixel_array returns stored values).

    Slices are written into a C-ordered (slice, row, column) buffer, each one contiguous, and the transposed
    view is returned (Fortran-ordered, like nibabel's arrays); writing strided columns instead is ~20x slower.
    """
    ref = instances[0]
    exact = _hu_exact_int(instances)
    buf = np.empty((len(instances), ref.rows, ref.columns), dtype=np.int16 if exact else np.float32)
    overflow: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        inst = instances[k]
        raw = _decode(inst)
        dst = buf[k]
        if not exact:
            np.add(raw * np.float64(inst.rescale_slope), inst.rescale_intercept, out=dst, casting="unsafe")
            return
        slope, inter = int(inst.rescale_slope), int(inst.rescale_intercept)
        ends = (int(raw.min()) * slope + inter, int(raw.max()) * slope + inter)
        if min(ends) < _INT16.min or max(ends) > _INT16.max:
            overflow[k] = raw.astype(np.int64) * slope + inter  # rare (e.g. slope 2 on 12-bit data): float32 below
        elif slope == 1:
            np.add(raw, inter, out=dst, dtype=np.int32, casting="unsafe")
        else:
            dst[...] = raw.astype(np.int32) * slope + inter

    with ThreadPoolExecutor(workers or _workers()) as pool:
        for _ in pool.map(work, range(len(instances))):
            pass
    if overflow:
        buf = buf.astype(np.float32)
        for k, hu in overflow.items():
            buf[k] = hu
    return buf.transpose(2, 1, 0)


def _meta_series(series) -> dict:
    s = series.summary()
    return {k: s[k] for k in ("number", "uid", "description", "modality", "n_instances", "slice_thickness", "folder")}


def load_dicom(
    path: str | Path,
    *,
    series: str | int | None = None,
    allow_non_ct: bool = False,
    allow_tilt: bool = False,
    workers: int | None = None,
) -> Volume:
    """Read a DICOM series into a `Volume` (voxel (column, row, slice) -> RAS mm; slices ordered along the
    image normal).

    path: a single DICOM file (read as a one-image volume), or a folder searched recursively; with several
    series in the folder, `series` picks one (see `dicom_select.select_series`), else the largest CT series.
    meta: source, format="dicom", series (number, uid, description, modality, n_instances, slice_thickness,
    folder), other_series (same dicts), instances (InstanceGeometry in volume slice order), tilt_deg.
    """
    path = Path(path)
    if path.is_file():
        inst = read_header(path, force=True)
        if inst is None:
            raise VolumeReadError(path, "DICOM file holds no image (no Rows/PixelData; a DICOMDIR or report?)")
        all_instances = [inst]
    elif path.is_dir():
        all_instances = scan_headers(path, recursive=True)
        if not all_instances:
            files = [p for p in path.rglob("*") if p.is_file()]
            n_dicom = sum(is_dicom_file(p) for p in files)
            what = (
                "empty folder"
                if not files
                else (
                    f"{len(files)} files, {n_dicom} of them DICOM, none an image"
                    if n_dicom
                    else f"{len(files)} files, none with a DICOM (DICM) header"
                )
            )
            raise VolumeReadError(path, f"no DICOM images found ({what})")
    else:
        raise VolumeReadError(path, "no such file or folder")

    groups = group_series(all_instances)
    chosen = select_series(groups, series, allow_non_ct=allow_non_ct, where=path)
    if chosen.modality != "CT" and not allow_non_ct:
        raise VolumeReadError(path, f"{chosen.label()} has modality {chosen.modality or 'unknown'}, not CT; "
                                    "pass allow_non_ct=True")  # fmt: skip
    stack = stack_series(chosen, where=path, allow_tilt=allow_tilt)
    array = _read_pixels(stack.instances, workers)
    return Volume(
        array,
        stack.affine,
        {
            "source": str(path),
            "format": "dicom",
            "series": _meta_series(chosen),
            "other_series": [_meta_series(s) for s in groups if s is not chosen],
            "instances": stack.instances,
            "tilt_deg": stack.tilt_deg,
        },
    )
