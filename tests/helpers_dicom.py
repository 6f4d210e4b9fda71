"""Shared builders for IO tests: small synthetic volumes, oblique affines, and SimpleITK reference reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from Euler angles in degrees (x, then y, then z), built by hand to stay independent."""
    a, b, c = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_affine(spacing=(0.7, 0.8, 2.5), origin=(10.0, -20.0, 30.0), angles=(0.0, 0.0, 0.0)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rotation(*angles) @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def random_hu(shape=(20, 16, 8), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 2000, size=shape).astype(np.int16)


def sitk_read_series(folder: Path):
    """(array as (I, J, K), 4x4 affine in RAS) of the one series in `folder`, as SimpleITK/GDCM read it."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk_to_ras(reader.Execute())


def sitk_read_file(path: Path):
    import SimpleITK as sitk

    return sitk_to_ras(sitk.ReadImage(str(path)))


def sitk_to_ras(img):
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    direction = np.array(img.GetDirection()).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = direction * np.array(img.GetSpacing())
    aff[:3, 3] = img.GetOrigin()
    return arr, LPS @ aff


def pydicom_testdata(name: str) -> Path:
    """A file or folder bundled with pydicom (local files only; never triggers pydicom's download of extras)."""
    import pydicom

    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    if not path.exists():
        import pytest

        pytest.skip(f"pydicom test data {name} not bundled in this pydicom version")
    return path


def write_series(folder: Path, arr=None, affine=None, **kw):
    """write_dicom_series with test defaults; returns (array, affine, paths)."""
    from radfinder.io import write_dicom_series

    arr = random_hu() if arr is None else arr
    affine = make_affine() if affine is None else affine
    defaults = dict(series_number=3, study_uid="1.2.826.0.1.3680043.8.498.1", patient_id="P1", uid_seed=str(folder))
    paths = write_dicom_series(arr, affine, folder, **{**defaults, **kw})
    return arr, affine, paths
