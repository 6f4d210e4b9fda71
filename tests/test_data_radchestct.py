"""Rad-ChestCT loader on the synthetic mirror (npz + label CSVs), and the npz geometry of the mirror writer
checked against SimpleITK."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpers_data import mirror
from radfinder.data.radchestct import load_radchestct
from radfinder.data.records import DatasetError
from radfinder.data.synth.mirrors import nifti_to_radchestct_npz
from radfinder.io import load_volume
from radfinder.text.findings import CTRATE_FINDINGS

CALC = ("Arterial wall calcification", "Coronary artery wall calcification")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return mirror(tmp_path_factory, "radchestct")


def _expected(labels: dict[str, int]) -> list[float]:
    """What the protocol mapping gives: calcification feeds both calcification classes; Mosaic is unknown."""
    out = []
    for f in CTRATE_FINDINGS:
        if f in CALC:
            out.append(float(max(labels[c] for c in CALC)))
        elif f == "Mosaic attenuation pattern":
            out.append(-1.0)
        else:
            out.append(float(labels[f]))
    return out


def test_all_is_union_of_splits_with_mapped_labels(root):
    info = json.loads((root / "mirror.json").read_text())["studies"]
    recs = load_radchestct(root, "all", spacing_mm=4.0)
    assert {r.key for r in recs} == set(info)
    parts = [load_radchestct(root, sp, spacing_mm=4.0) for sp in ("train", "valid", "test")]
    assert all(parts) and sorted(r.key for p in parts for r in p) == sorted(r.key for r in recs)
    for r in recs:
        assert r.split == info[r.key]["split"] and r.patient == r.key and r.dataset == "rad-chestct"
        assert r.findings == r.impressions == "" and not r.has_report
        assert r.labels.tolist() == _expected(info[r.key]["labels"]), r.key
        assert r.load_opts == {"spacing": (4.0, 4.0, 4.0)}


def test_records_load_with_rad_chestct_geometry(root):
    r = load_radchestct(root, "valid", spacing_mm=4.0)[0]
    vol = r.load_volume()
    assert vol.orientation == "IPL"
    assert vol.spacing == pytest.approx((4.0, 4.0, 4.0))
    assert vol.array.dtype == np.int16 and vol.array.min() >= -1000 and vol.array.max() <= 1000
    assert load_radchestct(root, "valid")[0].load_opts == {}  # the real 0.8 mm needs no override


def test_missing_tables_and_files(root, tmp_path):
    with pytest.raises(DatasetError, match="no imgtest_Abnormality_and_Location_Labels.csv"):
        load_radchestct(tmp_path, "test")
    with pytest.raises(DatasetError, match="no Rad-ChestCT label table"):
        load_radchestct(tmp_path)
    (tmp_path / "labels").mkdir()
    src = root / "imgtrain_Abnormality_and_Location_Labels.csv"
    (tmp_path / "labels" / src.name).write_text(src.read_text())  # one folder below is found too
    with pytest.raises(DatasetError, match="none of the .* labelled volumes exist"):
        load_radchestct(tmp_path, "train")
    assert len(load_radchestct(tmp_path, "train", require_files=False)) == src.read_text().count("\n") - 1
    (tmp_path / "labels" / src.name).write_text("NoteAcc_DEID,nodule*left_lung\nx1,2\n")
    with pytest.raises(DatasetError, match="must be 0/1"):
        load_radchestct(tmp_path, "train", require_files=False)


def _sitk_world_ras(path: Path, ijk_sitk: np.ndarray) -> np.ndarray:
    """World RAS of a continuous index in SimpleITK's (x, y, z) index order (= nibabel's i, j, k)."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    lps = np.array(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk_sitk]))
    return lps * np.array([-1.0, -1.0, 1.0])


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([-1.5, -2.0, 3.0, 1.0]),  # L, P, S (the CT-RATE / DICOM-like case)
        np.diag([1.2, 1.7, -2.5, 1.0]),  # R, A, I
    ],
)
def test_npz_mirror_keeps_world_geometry(tmp_path, affine):
    affine = affine.copy()
    affine[:3, 3] = [40.0, -25.0, 110.0]
    shape = (40, 30, 20)
    arr = np.full(shape, -1000, np.int16)
    arr[4:36, 3:27, 2:18] = 40
    lo, hi = np.array([28, 4, 13]), np.array([33, 9, 17])  # an off-centre marker: any flip moves it
    arr[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 900
    src = tmp_path / "src.nii.gz"
    nib.save(nib.Nifti1Image(arr, affine), src)

    geo = nifti_to_radchestct_npz(src, tmp_path / "npz" / "x.npz", spacing_mm=0.8)
    vol = load_volume(tmp_path / "npz" / "x.npz")
    assert vol.orientation == "IPL" and vol.spacing == pytest.approx((0.8, 0.8, 0.8))
    assert list(vol.shape) == geo["shape"]

    # independent reference: SimpleITK's world position of the source centre and of the marker centre
    centre_ref = _sitk_world_ras(src, (np.array(shape) - 1) / 2)
    marker_ref = _sitk_world_ras(src, (lo + hi - 1) / 2)
    assert geo["centre_ras"] == pytest.approx(centre_ref.tolist(), abs=1e-3)
    ijk = np.argwhere(vol.array > 450).mean(axis=0)
    marker_npz = vol.world_of(ijk) + centre_ref  # npz volumes are centred at the origin
    voxel = float(np.max(np.abs(np.diag(affine)[:3])))
    assert np.abs(marker_npz - marker_ref).max() < voxel / 2
    # the npz covers the same world box (within a voxel)
    extent_src = (np.array(shape) - 1) * np.abs(np.diag(affine)[:3])
    extent_npz = (np.array(vol.shape)[[2, 1, 0]] - 1) * 0.8
    assert np.abs(extent_npz - extent_src).max() <= 0.8
