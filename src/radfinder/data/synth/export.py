"""Writing one study to disk in the real layouts: DICOM series per reconstruction and CT-RATE style NIfTI.

Files are deterministic: UIDs come from the cohort seed, the gzip header carries no time stamp, and nothing
depends on which worker process wrote them.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from .reports import SeriesIndex


def stable_uid(*parts: object) -> str:
    """A DICOM UID under the 2.25 (UUID-derived) root, fixed by its parts."""
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return "2.25." + str(int(h[:32], 16))


def write_series(
    array: np.ndarray,
    affine: np.ndarray,
    out_dir: Path,
    *,
    number: int,
    role: str,
    study_uid: str,
    patient_id: str,
    order: str,
    thickness: float,
    date: str,
    transfer_syntax: str,
    uid_seed: str,
    extra: dict,
) -> SeriesIndex:
    """Write one reconstruction; return where each of its slices sits and its InstanceNumber."""
    from ...io.dicom_write import write_dicom_series

    paths = write_dicom_series(
        array,
        affine,
        out_dir,
        series_number=number,
        study_uid=study_uid,
        patient_id=patient_id,
        series_description=f"CHEST {thickness:g}mm {'LUNG' if role == 'thin' else 'STD'}",
        study_date=date,
        instance_order=order,
        slice_thickness=thickness,
        transfer_syntax=transfer_syntax,
        extra_tags=extra,
        uid_seed=uid_seed,
    )
    # The writer's documented contract (tests check it against the files): paths in array slice order,
    # InstanceNumber 1..K with k ascending or K..1 descending; z of slice k from the affine.
    n = array.shape[2]
    inst = np.arange(1, n + 1) if order == "ascending" else np.arange(n, 0, -1)
    zs = affine[2, 3] + affine[2, 2] * np.arange(n)
    assert len(paths) == n
    return SeriesIndex(number, zs, inst, float(thickness), role)


def write_nifti(array: np.ndarray, affine: np.ndarray, path: Path, dtype=np.int16) -> int:
    """int16 HU NIfTI (CT-RATE ``*_fixed`` style: values are HU, no rescale), or a uint8 label map with
    ``dtype=np.uint8`` (TotalSegmentator's multilabel layout); returns bytes written."""
    import nibabel as nib

    img = nib.Nifti1Image(array.astype(dtype, copy=False), affine)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header["scl_slope"] = 1.0
    img.header["scl_inter"] = 0.0
    data = gzip.compress(img.to_bytes(), compresslevel=2, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def metadata_row(volume: str, s: SeriesIndex, array: np.ndarray, affine: np.ndarray, meta: dict) -> dict:
    """A row of CT-RATE's metadata CSV for one exported volume (values from the DICOM series it came from)."""
    first = int(np.argmin(s.instances))  # the header of image 1, as CT-RATE's extraction reports it
    pos_ras = affine[:3, :3] @ np.array([0.0, 0.0, first]) + affine[:3, 3]
    pos_lps = [-pos_ras[0], -pos_ras[1], pos_ras[2]]
    dx = float(np.linalg.norm(affine[:3, 0]))
    return {
        "VolumeName": volume,
        "Manufacturer": "radfinder",
        "SeriesDescription": f"CHEST {s.spacing:g}mm",
        "ManufacturerModelName": "synthetic",
        "PatientSex": meta["sex"],
        "PatientAge": f"{meta['age']:03d}Y",
        "ConvolutionKernel": meta["kernel"][s.role],
        "PatientPosition": "HFS",
        "ImagePositionPatient": "[" + ", ".join(f"{v:.7g}" for v in pos_lps) + "]",
        "ImageOrientationPatient": "[1, 0, 0, 0, 1, 0]",
        "SliceLocation": f"{pos_ras[2]:.7g}",
        "Rows": array.shape[1],
        "Columns": array.shape[0],
        "XYSpacing": f"[{dx:.7g}, {dx:.7g}]",
        "RescaleIntercept": -1024,
        "RescaleSlope": 1,
        "NumberofSlices": array.shape[2],
        "ZSpacing": s.spacing,
        "StudyDate": meta["date"],
    }


METADATA_COLUMNS = [
    "VolumeName",
    "Manufacturer",
    "SeriesDescription",
    "ManufacturerModelName",
    "PatientSex",
    "PatientAge",
    "ConvolutionKernel",
    "PatientPosition",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceLocation",
    "Rows",
    "Columns",
    "XYSpacing",
    "RescaleIntercept",
    "RescaleSlope",
    "NumberofSlices",
    "ZSpacing",
    "StudyDate",
]
