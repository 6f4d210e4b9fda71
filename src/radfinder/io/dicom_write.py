"""Write a HU volume as a single-frame CT DICOM series (one file per slice).

Used to build synthetic cohorts and test fixtures, so it aims at files that look like a scanner's: the usual
patient/study/series/frame-of-reference tags, per-slice geometry in LPS, a real rescale, and file names that
carry no order (readers must sort by geometry, as they must with real exports).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

TRANSFER_SYNTAXES = ("explicit_le", "implicit_le", "jpeg_ls_lossless", "jpeg2000_lossless", "rle")
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _transfer_syntax_uid(name: str) -> str:
    from pydicom import uid

    table = {
        "explicit_le": uid.ExplicitVRLittleEndian,
        "implicit_le": uid.ImplicitVRLittleEndian,
        "jpeg_ls_lossless": uid.JPEGLSLossless,
        "jpeg2000_lossless": uid.JPEG2000Lossless,
        "rle": uid.RLELossless,
    }
    if name not in table:
        raise ValueError(f"transfer_syntax {name!r} is not one of {', '.join(TRANSFER_SYNTAXES)}")
    return table[name]


def encoder_available(transfer_syntax: str) -> bool:
    """Whether this environment can write `transfer_syntax` (compressed ones need pydicom's optional plugins)."""
    ts = _transfer_syntax_uid(transfer_syntax)
    if not ts.is_compressed:
        return True
    from pydicom.pixels.encoders.base import get_encoder

    try:
        return bool(get_encoder(ts).is_available)
    except (NotImplementedError, ValueError):
        return False


def _fmt(v: float) -> str:
    """Decimal String of at most 16 chars, the DICOM DS limit, with as much precision as fits."""
    for digits in range(15, 0, -1):
        s = f"{float(v):.{digits}g}"
        if len(s) <= 16:
            return "0" if s == "-0" else s
    raise ValueError(f"cannot format {v} as a DICOM decimal string")


class _Uids:
    """UIDs from a seed (reproducible files) or random ones. The seed is mixed with a role name, so the same seed
    never gives two entities the same UID."""

    def __init__(self, seed: str | None):
        self.seed = seed

    def make(self, *role: object) -> str:
        from pydicom.uid import generate_uid

        if self.seed is None:
            return generate_uid()
        return generate_uid(entropy_srcs=[self.seed, *(str(r) for r in role)])


def write_dicom_series(
    array_hu: np.ndarray,
    affine_ras: np.ndarray,
    out_dir: str | Path,
    *,
    series_number: int,
    study_uid: str,
    patient_id: str,
    series_uid: str | None = None,
    series_description: str = "",
    study_date: str = "20240101",
    instance_order: Literal["ascending", "descending"] = "ascending",
    slice_thickness: float | None = None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    transfer_syntax: str = "explicit_le",
    modality: str = "CT",
    extra_tags: Mapping[str, Any] | None = None,
    uid_seed: str | None = None,
) -> list[Path]:
    """Write `array_hu` as one DICOM file per slice and return the paths in array slice order (axis 2).

    Geometry: `array_hu` is (I, J, K) and `affine_ras` maps voxel (i, j, k) to RAS+ mm (the `Volume` convention).
    Axis 0 becomes the image column (DICOM x within the image), axis 1 the image row, axis 2 the slice; so each
    file's pixel matrix is ``array_hu[:, :, k].T`` with Rows = J, Columns = I. The affine is turned into LPS
    for ImageOrientationPatient / ImagePositionPatient. A slice axis that is not perpendicular to the image
    plane (gantry tilt) is written as given; readers are expected to notice.

    Values: stored = round((HU - intercept) / slope) as signed 16 bit; ValueError if a value does not fit.
    InstanceNumber counts 1..K with k (`ascending`) or K..1 (`descending`). SliceThickness defaults to the
    spacing between slices along the plane normal, which is also written as SpacingBetweenSlices.

    UIDs: with `uid_seed` every UID (SOP instance, series unless `series_uid` is given, frame of reference) is
    derived from the seed, and the file bytes are identical run to run; without it they are random.
    File names are a hash of the SOPInstanceUID, so they say nothing about slice order.

    transfer_syntax: "explicit_le" (default), "implicit_le", "rle", "jpeg2000_lossless", "jpeg_ls_lossless";
    compressed ones need pydicom's encoder plugins (see `encoder_available`), else RuntimeError.
    extra_tags: DICOM keyword -> value, set last (overrides defaults); a value of None deletes the tag, e.g.
    ``{"SeriesNumber": None}`` for a series without one.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

    arr = np.asarray(array_hu)
    if arr.ndim != 3:
        raise ValueError(f"array_hu must be 3D (columns, rows, slices), got shape {arr.shape}")
    if min(arr.shape) < 1:
        raise ValueError(f"array_hu has an empty axis: shape {arr.shape}")
    aff = np.asarray(affine_ras, dtype=np.float64)
    if aff.shape != (4, 4):
        raise ValueError(f"affine_ras must be 4x4, got {aff.shape}")
    if instance_order not in ("ascending", "descending"):
        raise ValueError(f"instance_order must be 'ascending' or 'descending', got {instance_order!r}")
    if rescale_slope == 0:
        raise ValueError("rescale_slope must be non-zero")
    ts_uid = _transfer_syntax_uid(transfer_syntax)
    if not encoder_available(transfer_syntax):
        raise RuntimeError(f"no pydicom encoder available for {transfer_syntax} ({ts_uid.name}) in this environment")

    if transfer_syntax == "jpeg2000_lossless" and min(arr.shape[:2]) < 32:
        # OpenJPEG's encoder uses 6 resolution levels (not configurable through pydicom), which needs >= 32 px.
        raise ValueError(f"jpeg2000_lossless needs images of at least 32x32 pixels, got {arr.shape[0]}x{arr.shape[1]}")
    stored_f = np.rint((arr.astype(np.float64) - rescale_intercept) / rescale_slope)
    if not np.all(np.isfinite(stored_f)):
        raise ValueError("array_hu contains NaN or inf")
    if stored_f.min() < -32768 or stored_f.max() > 32767:
        raise ValueError(
            f"HU range {arr.min()}..{arr.max()} does not fit int16 with slope {rescale_slope}, "
            f"intercept {rescale_intercept}"
        )
    stored = stored_f.astype(np.int16)

    lps = _RAS_TO_LPS @ aff
    col_step, row_step, slice_step = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    col_spacing, row_spacing = float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))
    if col_spacing == 0 or row_spacing == 0:
        raise ValueError("affine_ras has a zero-length in-plane axis")
    row_dir, col_dir = col_step / col_spacing, row_step / row_spacing  # DICOM: first IOP triplet runs along a row
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    between = abs(float(slice_step @ normal))
    thickness = float(slice_thickness) if slice_thickness is not None else between

    uids = _Uids(uid_seed)
    series_uid = series_uid or uids.make("series", study_uid, series_number)
    frame_uid = uids.make("frame", study_uid, series_number)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = arr.shape[2]
    # Every element that is the same on all slices is set once on a template; each slice's dataset starts from a
    # copy of the template's element table (the elements themselves are shared, never modified) and sets only
    # what differs. pydicom writes elements in tag order, so the files are byte for byte those of setting every
    # element per slice, at a fraction of the cost of pydicom's per-attribute bookkeeping (the writer was most of
    # the synthetic cohort's rendering time).
    tpl = Dataset()
    tpl.SpecificCharacterSet = "ISO_IR 100"
    tpl.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    tpl.SOPClassUID = CT_IMAGE_STORAGE
    tpl.StudyDate = tpl.SeriesDate = tpl.AcquisitionDate = tpl.ContentDate = study_date
    tpl.StudyTime = tpl.SeriesTime = tpl.AcquisitionTime = tpl.ContentTime = "120000"
    tpl.AccessionNumber = ""
    tpl.Modality = modality
    tpl.Manufacturer = "radfinder"
    tpl.ReferringPhysicianName = ""
    tpl.StudyDescription = "CT CHEST"
    tpl.SeriesDescription = series_description
    tpl.ManufacturerModelName = "synthetic"
    tpl.PatientName = f"SYNTH^{patient_id}"
    tpl.PatientID = patient_id
    tpl.PatientBirthDate = ""
    tpl.PatientSex = "O"
    tpl.BodyPartExamined = "CHEST"
    tpl.SliceThickness = _fmt(thickness)
    tpl.KVP = "120"
    tpl.SpacingBetweenSlices = _fmt(between)
    tpl.PatientPosition = "HFS"
    tpl.StudyInstanceUID = study_uid
    tpl.SeriesInstanceUID = series_uid
    tpl.StudyID = "1"
    tpl.SeriesNumber = int(series_number)
    tpl.AcquisitionNumber = 1
    tpl.ImageOrientationPatient = [_fmt(v) for v in (*row_dir, *col_dir)]
    tpl.FrameOfReferenceUID = frame_uid
    tpl.PositionReferenceIndicator = ""
    tpl.SamplesPerPixel = 1
    tpl.PhotometricInterpretation = "MONOCHROME2"
    tpl.Rows = int(arr.shape[1])
    tpl.Columns = int(arr.shape[0])
    tpl.PixelSpacing = [_fmt(row_spacing), _fmt(col_spacing)]
    tpl.BitsAllocated = 16
    tpl.BitsStored = 16
    tpl.HighBit = 15
    tpl.PixelRepresentation = 1
    tpl.WindowCenter = "40"
    tpl.WindowWidth = "400"
    tpl.RescaleIntercept = _fmt(rescale_intercept)
    tpl.RescaleSlope = _fmt(rescale_slope)
    tpl.RescaleType = "HU"
    per_slice = {"SOPInstanceUID", "InstanceNumber", "ImagePositionPatient", "SliceLocation"}
    extras = dict(extra_tags or {})
    for key, value in extras.items():  # extra tags override the defaults (per-slice ones again on each slice)
        if value is None:
            if key in tpl:
                delattr(tpl, key)
        elif key not in per_slice:
            setattr(tpl, key, value)
    late = {k: v for k, v in extras.items() if k in per_slice}
    paths: list[Path] = []
    for k in range(n):
        sop_uid = uids.make("sop", series_uid, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ts_uid
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "RADFINDER"
        ds = Dataset(dict(tpl._dict))
        ds.file_meta = meta
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1 if instance_order == "ascending" else n - k
        pos = lps[:3, 3] + k * slice_step
        ds.ImagePositionPatient = [_fmt(v) for v in pos]
        ds.SliceLocation = _fmt(float(pos @ normal))
        for key, value in late.items():
            if value is None:
                if key in ds:
                    delattr(ds, key)
            else:
                setattr(ds, key, value)
        pixels = np.ascontiguousarray(stored[:, :, k].T)
        if ts_uid.is_compressed:
            ds.compress(ts_uid, pixels, encoding_plugin="", generate_instance_uid=False)
        else:
            ds.PixelData = pixels.astype("<i2").tobytes()
        name = hashlib.sha1(sop_uid.encode()).hexdigest()[:24] + ".dcm"
        path = out / name
        ds.save_as(path, enforce_file_format=True, implicit_vr=ts_uid.is_implicit_VR, little_endian=True)
        paths.append(path)
    return paths
