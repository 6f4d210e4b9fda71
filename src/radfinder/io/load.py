"""`load_volume`: one entry point for every CT format radfinder reads, with the same validation for all."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import VolumeReadError
from .dicom_index import is_dicom_file
from .volume import Volume

SUPPORTED = ".nii, .nii.gz, .nrrd, .nhdr, .npz, DICOM (.dcm or extensionless file, or a folder)"


def detect_format(path: str | Path) -> str:
    """ "nifti", "nrrd", "npz" or "dicom" from the name (DICOM also from the file's DICM header or a folder)."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        return "dicom"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".dcm", ".dicom", ".ima")) or (path.is_file() and is_dicom_file(path)):
        return "dicom"
    if not path.exists():
        raise VolumeReadError(path, "no such file or folder")
    raise VolumeReadError(path, f"unsupported file type {''.join(path.suffixes) or '(no extension)'}; "
                                f"radfinder reads {SUPPORTED}")  # fmt: skip


def check_volume(vol: Volume, path: Path) -> Volume:
    """Reject volumes no model should see: empty axes, non-finite voxels, a degenerate affine."""
    if min(vol.shape) < 1:
        raise VolumeReadError(path, f"volume has an empty axis: shape {vol.shape}")
    if vol.array.dtype.kind == "f":
        bad = ~np.isfinite(vol.array)
        n_bad = int(bad.sum())
        if n_bad:
            first = tuple(int(v) for v in np.argwhere(bad)[0])
            n_nan = int(np.isnan(vol.array).sum())
            raise VolumeReadError(
                path, f"{n_bad} non-finite voxels ({n_nan} NaN, {n_bad - n_nan} inf) of {vol.array.size}; "
                f"first at voxel {first}",
            )  # fmt: skip
    if not np.all(np.isfinite(vol.affine)) or abs(np.linalg.det(vol.affine[:3, :3])) < 1e-12:
        raise VolumeReadError(path, f"affine is degenerate or not finite:\n{vol.affine}")
    return vol


def load_volume(
    path: str | Path,
    *,
    series: str | int | None = None,
    allow_non_ct: bool = False,
    allow_tilt: bool = False,
    affine: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    npz_key: str = "ct",
    workers: int | None = None,
) -> Volume:
    """Read a CT volume from NIfTI, NRRD, NPZ or DICOM into a `Volume` (HU; affine voxel -> RAS+ mm).

    path: a .nii/.nii.gz, .nrrd/.nhdr, .npz file, a DICOM file, or a folder of DICOM (one series, a mixed
        folder, or a whole study; searched recursively).
    series (DICOM only): SeriesNumber (int or digits), SeriesInstanceUID, or a SeriesDescription substring;
        default the largest CT series. The choice and the other series found are in ``meta``.
    allow_non_ct (DICOM): accept a modality other than CT. allow_tilt (DICOM): accept gantry-tilted stacks
        as a sheared affine instead of raising.
    affine / spacing / npz_key (NPZ only): override the Rad-ChestCT default geometry (see `formats.npz_affine`)
        or the array key.
    workers: threads for DICOM pixel decoding (default: up to 8, by CPU count).

    Raises VolumeReadError naming the file and the problem: unsupported type, damaged or truncated file, no
    images, non-CT, 4D, mixed image sizes, tilted/oblique stacks, missing slices or uneven spacing, NaN/inf.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt != "npz" and (affine is not None or spacing is not None):
        raise VolumeReadError(path, "affine=/spacing= apply to NPZ only; other formats carry their own geometry")
    if fmt != "dicom" and series is not None:
        raise VolumeReadError(path, f"series= applies to DICOM only; this is a {fmt} file")
    if fmt != "dicom" and not path.is_file():
        raise VolumeReadError(path, "no such file")
    if fmt == "nifti":
        from .formats import load_nifti

        vol = load_nifti(path)
    elif fmt == "nrrd":
        from .formats import load_nrrd

        vol = load_nrrd(path)
    elif fmt == "npz":
        from .formats import load_npz

        vol = load_npz(path, key=npz_key, affine=affine, spacing=spacing)
    else:
        from .dicom_read import load_dicom

        vol = load_dicom(path, series=series, allow_non_ct=allow_non_ct, allow_tilt=allow_tilt, workers=workers)
    return check_volume(vol, path)
