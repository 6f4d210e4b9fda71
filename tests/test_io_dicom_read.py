"""DICOM reading: geometry and HU against SimpleITK (GDCM), on written series and pydicom's bundled CT data."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from helpers_dicom import LPS, make_affine, pydicom_testdata, random_hu, sitk_read_file, sitk_read_series, write_series
from radfinder.io import load_volume
from radfinder.io.dicom_write import encoder_available

OBLIQUE = make_affine(spacing=(0.68, 0.74, 1.25), origin=(-3.0, 22.0, -140.0), angles=(12.0, -7.0, 25.0))


def assert_matches_sitk(vol, ref_arr, ref_aff, atol=1e-4):
    np.testing.assert_array_equal(vol.array, ref_arr)
    np.testing.assert_allclose(vol.affine, ref_aff, atol=atol)


@pytest.mark.parametrize("order", ["ascending", "descending"])
@pytest.mark.parametrize("affine", [make_affine(), OBLIQUE], ids=["axial", "oblique"])
def test_written_series_matches_simpleitk(tmp_path, order, affine):
    arr, _, paths = write_series(tmp_path, random_hu((18, 14, 9)), affine, instance_order=order)
    vol = load_volume(tmp_path)
    assert_matches_sitk(vol, *sitk_read_series(tmp_path))
    np.testing.assert_allclose(vol.affine, affine, atol=1e-4)
    assert vol.array.dtype == np.int16
    inst = vol.meta["instances"]
    assert [i.path for i in inst] == paths  # volume slice order is geometric order, whatever InstanceNumber says
    numbers = [i.instance_number for i in inst]
    assert numbers == sorted(numbers, reverse=(order == "descending"))


def test_reversed_slice_axis_is_sorted_along_normal(tmp_path):
    # Slice axis pointing inferior: the reader stacks along +normal, so it flips the order and the origin.
    aff = make_affine(spacing=(0.8, 0.8, 2.0))
    aff[:3, 2] *= -1
    arr, _, _ = write_series(tmp_path, random_hu((10, 12, 6)), aff)
    vol = load_volume(tmp_path)
    assert_matches_sitk(vol, *sitk_read_series(tmp_path))
    np.testing.assert_array_equal(vol.array, arr[:, :, ::-1])
    np.testing.assert_allclose(vol.world_of([0, 0, 0]), aff[:3, :3] @ [0, 0, 5] + aff[:3, 3], atol=1e-4)


def test_rescale_applied_exactly_once_and_float_when_inexact(tmp_path):
    hu = random_hu((10, 10, 4))
    _, _, paths = write_series(tmp_path / "a", hu, rescale_slope=1.0, rescale_intercept=-1024.0)
    raw = pydicom.dcmread(paths[0]).pixel_array
    np.testing.assert_array_equal(raw, hu[:, :, 0].T + 1024)  # pydicom returns stored values, not HU
    np.testing.assert_array_equal(load_volume(tmp_path / "a").array, hu)
    write_series(tmp_path / "b", hu, rescale_slope=0.5, rescale_intercept=-1000.5)
    vol = load_volume(tmp_path / "b")
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, np.rint((hu + 1000.5) / 0.5) * 0.5 - 1000.5)
    assert_matches_sitk(vol, *sitk_read_series(tmp_path / "b"))


def test_missing_series_number_and_threads(tmp_path):
    arr, _, _ = write_series(tmp_path, extra_tags={"SeriesNumber": None})
    vol = load_volume(tmp_path, workers=1)
    assert vol.meta["series"]["number"] is None
    np.testing.assert_array_equal(vol.array, load_volume(tmp_path, workers=4).array)


@pytest.mark.parametrize("ts", ["rle", "jpeg2000_lossless", "jpeg_ls_lossless"])
def test_compressed_written_series(tmp_path, ts):
    if not encoder_available(ts):
        pytest.skip(f"pydicom cannot encode {ts} here")
    arr, aff, _ = write_series(tmp_path, random_hu((40, 34, 5)), OBLIQUE, transfer_syntax=ts)
    vol = load_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, arr)
    assert_matches_sitk(vol, *sitk_read_series(tmp_path))


def test_pydicom_ct_small_single_file():
    path = pydicom_testdata("CT_small.dcm")
    vol = load_volume(path)
    ref_arr, ref_aff = sitk_read_file(path)
    assert_matches_sitk(vol, ref_arr, ref_aff)
    raw = pydicom.dcmread(path).pixel_array
    assert vol.shape == (128, 128, 1) and int(vol.array.min()) == int(raw.min()) - 1024


def test_pydicom_ct_series_instance_numbers_run_against_z():
    # CT5N: InstanceNumber 6..10 while z goes 8.76 -> -1.24, files named by arbitrary numbers.
    folder = pydicom_testdata("dicomdirtests/98892001/CT5N")
    vol = load_volume(folder)
    assert_matches_sitk(vol, *sitk_read_series(folder))
    assert vol.shape == (16, 16, 5)
    assert [i.instance_number for i in vol.meta["instances"]] == [10, 9, 8, 7, 6]


def test_pydicom_ct_series_with_numbering_gap_reports_the_gap(tmp_path):
    folder = pydicom_testdata("dicomdirtests/77654033/CT2")  # images 18, 180, 181, 182
    with pytest.raises(Exception, match=r"202\.500 mm between image 18 .*~161 missing slice"):
        load_volume(folder)
    for name in ("17136", "17166", "17196"):  # the contiguous run 180..182 is a valid volume
        shutil.copy(folder / name, tmp_path / name)
    vol = load_volume(tmp_path)
    assert_matches_sitk(vol, *sitk_read_series(tmp_path))
    assert vol.spacing[2] == pytest.approx(1.25, abs=1e-4)


def test_pydicom_compressed_ct_jpeg2000():
    path = pydicom_testdata("693_J2KI.dcm")  # CT, JPEG 2000, RescaleIntercept -1024
    vol = load_volume(path)
    assert_matches_sitk(vol, *sitk_read_file(path))


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_pydicom_compressed_files_decode_like_uncompressed(name):
    ref = load_volume(pydicom_testdata("MR_small.dcm"), allow_non_ct=True)
    vol = load_volume(pydicom_testdata(name), allow_non_ct=True)
    np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_allclose(vol.affine, ref.affine)
    sitk_arr, sitk_aff = sitk_read_file(pydicom_testdata("MR_small.dcm"))
    np.testing.assert_array_equal(ref.array, sitk_arr)
    # One image without SpacingBetweenSlices: GDCM assumes 1 mm across the plane, radfinder SliceThickness (0.8).
    np.testing.assert_allclose(ref.affine[:, [0, 1, 3]], sitk_aff[:, [0, 1, 3]], atol=1e-4)
    assert ref.spacing[2] == pytest.approx(0.8)


def test_instance_plane_affine_matches_simpleitk():
    import SimpleITK as sitk

    path = pydicom_testdata("CT_small.dcm")
    inst = load_volume(path).meta["instances"][0]
    img = sitk.ReadImage(str(path))
    for c, r in [(0, 0), (5, 100), (127, 3)]:
        lps = np.array(img.TransformIndexToPhysicalPoint((c, r, 0)))
        ras = (inst.plane_affine() @ [c, r, 0, 1])[:3]
        np.testing.assert_allclose(ras, LPS[:3, :3] @ lps, atol=1e-4)


def test_integer_slope_and_hu_beyond_int16(tmp_path):
    hu = random_hu((10, 8, 3)).astype(np.int32) * 2
    _, _, _ = write_series(tmp_path / "a", hu, rescale_slope=2.0, rescale_intercept=-1024.0)
    vol = load_volume(tmp_path / "a")
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, hu)
    hu[3, 4, 1] = 40000  # metal-artefact scale values: exact but outside int16, so the volume widens to float32
    write_series(tmp_path / "b", hu, rescale_slope=2.0, rescale_intercept=-1024.0)
    vol = load_volume(tmp_path / "b")
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, hu)
    assert_matches_sitk(vol, *sitk_read_series(tmp_path / "b"))
