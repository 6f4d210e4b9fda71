"""NIfTI, NRRD and NPZ reading against SimpleITK / nibabel, including the real TotalSegmentator CT crops."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from helpers_dicom import make_affine, random_hu, sitk_read_file
from radfinder.io import load_volume
from radfinder.io.formats import npz_affine

REAL_CT = ["aorta_crop/ct_cropped.nii.gz", "pulmonary_crop/ct_cropped.nii.gz", "example_ct_sm/example_ct_sm.nii.gz"]


@pytest.mark.parametrize("rel", REAL_CT)
def test_real_nifti_matches_simpleitk(real_data, rel):
    path = real_data / "totalsegmentator_ct" / rel
    if not path.is_file():
        pytest.skip(f"{path} absent")
    vol = load_volume(path)
    ref_arr, ref_aff = sitk_read_file(path)
    np.testing.assert_array_equal(vol.array, ref_arr)
    np.testing.assert_allclose(vol.affine, ref_aff, atol=1e-4)
    assert vol.array.dtype == np.int16
    assert vol.meta["format"] == "nifti"


def test_real_nifti_documented_facts(real_data):
    # SOURCE.md: aorta crop 120x126x164 int16, 1.5 mm iso, LPS, HU -1078..3343; example_ct_sm RAS, 3 mm.
    root = real_data / "totalsegmentator_ct"
    if not (root / "aorta_crop/ct_cropped.nii.gz").is_file():
        pytest.skip("TotalSegmentator crops absent")
    vol = load_volume(root / "aorta_crop/ct_cropped.nii.gz")
    assert vol.shape == (120, 126, 164) and vol.orientation == "LPS"
    assert vol.spacing == pytest.approx((1.5, 1.5, 1.5), abs=1e-4)
    assert (int(vol.array.min()), int(vol.array.max())) == (-1078, 3343)
    sm = load_volume(root / "example_ct_sm/example_ct_sm.nii.gz")
    assert sm.orientation == "RAS" and sm.shape == (122, 101, 30)


def test_nifti_scaling_applied_and_int16_kept_when_exact(tmp_path):
    raw = random_hu((6, 7, 8)) + 1024
    img = nib.Nifti1Image(raw.astype(np.int16), make_affine())
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, tmp_path / "a.nii.gz")
    vol = load_volume(tmp_path / "a.nii.gz")
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, raw - 1024)
    img.header.set_slope_inter(0.5, -1024.25)
    nib.save(img, tmp_path / "b.nii.gz")
    vol = load_volume(tmp_path / "b.nii.gz")
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, raw * 0.5 - 1024.25)
    np.testing.assert_allclose(vol.array, sitk_read_file(tmp_path / "b.nii.gz")[0])


def test_nifti_float_integers_become_int16_and_sform_wins(tmp_path):
    data = random_hu((5, 6, 7)).astype(np.float32)
    sform = make_affine(spacing=(0.9, 0.9, 2.0), angles=(5, 0, 10))
    img = nib.Nifti1Image(data, sform)
    img.set_qform(make_affine(spacing=(1, 1, 1)), code=1)
    img.set_sform(sform, code=2)
    nib.save(img, tmp_path / "f.nii")
    vol = load_volume(tmp_path / "f.nii")
    assert vol.array.dtype == np.int16
    np.testing.assert_allclose(vol.affine, sform, atol=1e-5)  # nibabel's rule: sform when its code is set
    assert (vol.meta["sform_code"], vol.meta["qform_code"]) == (2, 1)


@pytest.mark.parametrize("space", ["left-posterior-superior", "right-anterior-superior", "left-anterior-superior"])
def test_nrrd_geometry_matches_simpleitk(tmp_path, space):
    import nrrd

    arr = random_hu((9, 8, 7))
    dirs = make_affine(spacing=(0.6, 0.7, 1.5), angles=(8, -4, 20))[:3, :3].T  # rows: one direction per axis
    header = {"space": space, "space directions": dirs, "space origin": np.array([12.0, -30.5, 77.25])}
    nrrd.write(str(tmp_path / "v.nrrd"), arr, header)
    vol = load_volume(tmp_path / "v.nrrd")
    ref_arr, ref_aff = sitk_read_file(tmp_path / "v.nrrd")
    np.testing.assert_array_equal(vol.array, ref_arr)
    np.testing.assert_allclose(vol.affine, ref_aff, atol=1e-5)
    np.testing.assert_array_equal(vol.array, arr)


def test_npz_rad_chestct_convention(tmp_path):
    ct = random_hu((10, 12, 14))
    np.savez_compressed(tmp_path / "trn.npz", ct=ct)
    vol = load_volume(tmp_path / "trn.npz")
    assert vol.orientation == "IPL" and vol.spacing == pytest.approx((0.8, 0.8, 0.8))
    np.testing.assert_array_equal(vol.array, ct)
    np.testing.assert_allclose(vol.world_of([4.5, 5.5, 6.5]), 0.0, atol=1e-9)  # centred on the world origin
    # One voxel step along each axis moves Inferior, Posterior, Left by 0.8 mm.
    np.testing.assert_allclose(vol.world_of([1, 0, 0]) - vol.world_of([0, 0, 0]), [0, 0, -0.8])
    np.testing.assert_allclose(vol.world_of([0, 1, 0]) - vol.world_of([0, 0, 0]), [0, -0.8, 0])
    np.testing.assert_allclose(vol.world_of([0, 0, 1]) - vol.world_of([0, 0, 0]), [-0.8, 0, 0])


def test_npz_overrides(tmp_path):
    np.savez(tmp_path / "a.npz", ct=random_hu((4, 5, 6)))
    vol = load_volume(tmp_path / "a.npz", spacing=(2.0, 1.0, 1.0))
    assert vol.spacing == pytest.approx((2.0, 1.0, 1.0)) and vol.orientation == "IPL"
    np.testing.assert_allclose(vol.affine, npz_affine((4, 5, 6), (2.0, 1.0, 1.0)))
    aff = make_affine()
    np.testing.assert_allclose(load_volume(tmp_path / "a.npz", affine=aff).affine, aff)
