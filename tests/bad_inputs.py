"""The bad-input corpus: every kind of broken file a user may hand radfinder, written by code (never by hand-edited
binaries), each with the CLI command that reads it and the one-line error the user must see.

    python tests/bad_inputs.py DIR      # write the corpus to DIR and print the cases

`tests/test_bad_inputs.py` runs every case through the CLI; `docs/bad-inputs.md` lists the cases and their messages.
"""

from __future__ import annotations

import csv
import gzip
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers_dicom import make_affine, random_hu, write_series  # noqa: E402

REPORT_HEADER = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
FINDINGS_18 = None  # filled lazily from radfinder.text.findings (keeps `python tests/bad_inputs.py` light)


@dataclass(frozen=True)
class Case:
    """One bad input. `args(path, out)` is the CLI call; `message` a regex the single stderr line must match after
    `error: <path>: `; `writes` says whether the command would write to `out` had the input been good."""

    name: str
    what: str
    make: Callable[[Path], Path]
    args: Callable[[Path, Path], list[str]]
    message: str
    writes: bool = True


def _nifti(path: Path, data: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def _good_nifti(path: Path) -> Path:
    return _nifti(path, random_hu((24, 20, 12)))


# ---------------------------------------------------------------- volumes


def truncated_nifti(d: Path) -> Path:
    """A .nii.gz whose gzip stream stops half-way (a copy interrupted in the middle)."""
    path = _good_nifti(d / "truncated.nii.gz")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def corrupt_nifti(d: Path) -> Path:
    """A .nii.gz with a complete gzip stream whose NIfTI header is overwritten with noise (sizeof_hdr wrong)."""
    path = d / "corrupt.nii.gz"
    raw = bytearray(gzip.decompress(_good_nifti(path).read_bytes()))
    raw[0:120] = np.random.default_rng(0).integers(0, 256, 120, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def zero_byte_nifti(d: Path) -> Path:
    path = d / "empty.nii.gz"
    path.write_bytes(b"")
    return path


def wrong_magic_nifti(d: Path) -> Path:
    """A PNG saved under a .nii.gz name."""
    path = d / "picture.nii.gz"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    return path


def nifti_4d(d: Path) -> Path:
    return _nifti(d / "dynamic.nii.gz", np.zeros((8, 8, 6, 3), np.int16))


def nifti_nan(d: Path) -> Path:
    data = np.zeros((8, 8, 6), np.float32)
    data[1, 2, 3] = np.nan
    data[4, 4, 4] = np.inf
    return _nifti(d / "nan.nii.gz", data)


def nifti_huge_header(d: Path) -> Path:
    """A valid 352-byte NIfTI-1 header claiming 30000 x 30000 x 30000 int16 voxels (54 TB) and 64 bytes of data."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape((30000, 30000, 30000))
    hdr.set_qform(np.eye(4), code=1)
    hdr.set_sform(np.eye(4), code=1)
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + struct.pack("<4x") + bytes(64)
    path = d / "huge.nii.gz"
    path.write_bytes(gzip.compress(raw))
    return path


# ---------------------------------------------------------------- DICOM series


def dicom_missing_pixels(d: Path) -> Path:
    """A CT series one of whose files has its PixelData element removed."""
    folder = d / "dicom_no_pixels"
    _, _, paths = write_series(folder, random_hu((12, 10, 5)))
    ds = pydicom.dcmread(paths[2])
    del ds.PixelData
    ds.save_as(paths[2])
    return folder


def dicom_duplicate_instance(d: Path) -> Path:
    """A CT series with one file copied under a second name (the same instance twice)."""
    folder = d / "dicom_duplicate"
    _, _, paths = write_series(folder, random_hu((12, 10, 5)))
    shutil.copy(paths[1], folder / "copy_of_2.dcm")
    return folder


def dicom_missing_instance(d: Path) -> Path:
    """A CT series with its fourth of eight slices deleted (a gap twice the slice spacing)."""
    folder = d / "dicom_gap"
    _, _, paths = write_series(folder, random_hu((12, 10, 8)), make_affine(spacing=(0.8, 0.8, 2.5)))
    paths[3].unlink()
    return folder


def dicom_mixed_orientation(d: Path) -> Path:
    """One series (one SeriesInstanceUID) whose files hold axial and coronal images."""
    folder = d / "dicom_mixed_orientation"
    write_series(folder / "ax", random_hu((12, 10, 4)), series_uid="1.2.3.77", uid_seed="ax")
    write_series(folder / "cor", random_hu((12, 10, 3)), make_affine(angles=(90.0, 0.0, 0.0)), series_uid="1.2.3.77",
                 uid_seed="cor")  # fmt: skip
    return folder


def dicom_non_ct(d: Path) -> Path:
    folder = d / "dicom_mr"
    write_series(folder, random_hu((12, 10, 4)), modality="MR")
    return folder


# ---------------------------------------------------------------- report and label tables


def _write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def report_missing_column(d: Path) -> Path:
    """A CT-RATE report table without its Impressions_EN column."""
    header = [c for c in REPORT_HEADER if c != "Impressions_EN"]
    return _write_csv(d / "reports_no_impressions.csv", header, [["valid_1_a_1.nii.gz", "", "", "Normal lungs."]])


def report_not_utf8(d: Path) -> Path:
    """A CT-RATE report table saved as Latin-1 (a German report: 'Befund: Rundherd im Unterlappen, Größe 8 mm')."""
    path = d / "reports_latin1.csv"
    row = ["valid_1_a_1.nii.gz", "", "", "Rundherd im Unterlappen, Größe 8 mm.", "Kein Erguß."]
    return _write_csv(path, REPORT_HEADER, [row], encoding="latin-1")


def _ctrate_tree(d: Path, name: str, label_header: list[str], label_row: list[str]) -> Path:
    """A minimal CT-RATE layout (valid split, one volume) with the given label table."""
    root = d / name
    (root / "radiology_text_reports").mkdir(parents=True)
    (root / "multi_abnormality_labels").mkdir()
    _write_csv(root / "radiology_text_reports" / "validation_reports.csv", REPORT_HEADER,
               [["valid_1_a_1.nii.gz", "", "", "Normal lungs.", "No acute findings."]])  # fmt: skip
    _write_csv(root / "multi_abnormality_labels" / "valid_predicted_labels.csv", label_header, [label_row])
    folder = root / "valid_fixed" / "valid_1" / "valid_1_a"
    folder.mkdir(parents=True)
    _good_nifti(folder / "valid_1_a_1.nii.gz")
    return root


def labels_unknown_finding(d: Path) -> Path:
    """CT-RATE label table with a column that is not one of the 18 findings ('Pneumothorax')."""
    from radfinder.text.findings import CTRATE_FINDINGS

    header = ["VolumeName", *CTRATE_FINDINGS, "Pneumothorax"]
    return _ctrate_tree(d, "ctrate_unknown_label", header, ["valid_1_a_1.nii.gz"] + ["0"] * 19)


# ---------------------------------------------------------------- the cases


def _inspect(p: Path, out: Path) -> list[str]:
    return ["inspect", str(p), "--out", str(out / "preview.png")]


def _preprocess(p: Path, out: Path) -> list[str]:
    return ["preprocess", str(p), "--out", str(out / "scan.npz")]


def _label(p: Path, out: Path) -> list[str]:
    return ["label", str(p), "--out", str(out / "labels.csv")]


def _evaluate_data(p: Path, out: Path) -> list[str]:
    # the dataset is read before the checkpoint: the label table is refused whatever the model
    return ["evaluate", str(out.parent / "checkpoint-not-needed"), "--data", str(p), "--out", str(out / "eval")]


VOLUME_CASES = [
    ("truncated-nifti", "truncated .nii.gz (gzip stream cut half-way)", truncated_nifti,
     r"truncated NIfTI: the gzip stream ends before its end marker"),
    ("corrupt-nifti", "corrupt .nii.gz (header overwritten with noise)", corrupt_nifti, r"cannot read NIfTI \(.*\)"),
    ("zero-byte", "zero-byte .nii.gz", zero_byte_nifti, r"empty file \(0 bytes\)"),
    ("wrong-magic", "a PNG named .nii.gz", wrong_magic_nifti, r"not a gzip-compressed NIfTI .*"),
    ("4d", "4D NIfTI (8 x 8 x 6 x 3)", nifti_4d, r"4D with shape \(8, 8, 6, 3\).*"),
    ("nan-inf", "NaN and inf voxels", nifti_nan, r"2 non-finite voxels \(1 NaN, 1 inf\) of 384; first at voxel .*"),
    ("huge-header", "header claims 30000^3 int16 voxels (54 TB) in a 66-byte file", nifti_huge_header,
     r"header claims 30000 x 30000 x 30000 int16 voxels \(54\.0 TB\) .* refused before reading"),
    ("dicom-missing-pixels", "DICOM series, one file without PixelData", dicom_missing_pixels, r"no PixelData element"),
    ("dicom-duplicate", "DICOM series with one instance twice", dicom_duplicate_instance,
     r"1 slice positions hold more than one image \(e\.g\. .*copy_of_2\.dcm.* along the normal\)"),
    ("dicom-missing-instance", "DICOM series with a slice missing", dicom_missing_instance,
     r".*~1 missing slice.*"),
    ("dicom-mixed-orientation", "DICOM series mixing axial and coronal images", dicom_mixed_orientation,
     r".*mixes image orientations.*"),
    ("dicom-non-ct", "DICOM series of modality MR", dicom_non_ct, r".*modalities present: MR.*"),
]

CASES: list[Case] = []
for _name, _what, _make, _msg in VOLUME_CASES:
    CASES.append(Case(f"inspect:{_name}", _what, _make, _inspect, _msg))
    CASES.append(Case(f"preprocess:{_name}", _what, _make, _preprocess, _msg))
CASES += [
    Case("label:report-missing-column", "CT-RATE report CSV without Impressions_EN", report_missing_column, _label,
         r".*Impressions_EN.*"),
    Case("label:report-not-utf8", "report CSV in Latin-1", report_not_utf8, _label, r".*not UTF-8.*"),
    Case("evaluate:labels-unknown-finding", "CT-RATE label CSV with a column that is no CT-RATE finding",
         labels_unknown_finding, _evaluate_data, r"unknown finding column\(s\) \['Pneumothorax'\].*"),
]


def write_corpus(root: Path) -> dict[str, Path]:
    """Write every input of the corpus under `root` (one sub-folder per case); returns {case name: input path}."""
    made: dict[str, Path] = {}
    by_maker: dict[Callable, Path] = {}
    for case in CASES:
        if case.make not in by_maker:
            d = root / case.make.__name__
            d.mkdir(parents=True, exist_ok=True)
            by_maker[case.make] = case.make(d)
        made[case.name] = by_maker[case.make]
    return made


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/bad_inputs.py DIR")
    for name, path in write_corpus(Path(sys.argv[1])).items():
        print(f"{name:40s} {path}")
