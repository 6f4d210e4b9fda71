"""write_dicom_series: geometry and values as an independent reader (SimpleITK/GDCM) sees them."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from helpers_dicom import make_affine, random_hu, sitk_read_series
from radfinder.io.dicom_write import encoder_available, write_dicom_series

OBLIQUE = make_affine(spacing=(0.7, 0.8, 2.5), origin=(12.5, -40.0, 85.0), angles=(10.0, 5.0, 20.0))


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_geometry_and_values_match_simpleitk(tmp_path, order):
    arr = random_hu((20, 16, 7))
    paths = write_dicom_series(
        arr, OBLIQUE, tmp_path, series_number=4, study_uid="1.2.3.4", patient_id="P1", instance_order=order
    )
    assert len(paths) == 7
    sitk_arr, sitk_aff = sitk_read_series(tmp_path)
    np.testing.assert_array_equal(sitk_arr, arr)
    np.testing.assert_allclose(sitk_aff, OBLIQUE, atol=1e-4)
    numbers = [int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber) for p in paths]
    assert numbers == (list(range(1, 8)) if order == "ascending" else list(range(7, 0, -1)))


def test_tags_rescale_and_names(tmp_path):
    arr = random_hu((8, 6, 3))
    paths = write_dicom_series(
        arr, make_affine(), tmp_path, series_number=2, study_uid="1.2.3", patient_id="P9",
        series_description="LUNG 1mm", rescale_slope=2.0, rescale_intercept=-1000.0, slice_thickness=3.0,
    )  # fmt: skip
    ds = pydicom.dcmread(paths[1])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert (ds.Modality, ds.PatientID, ds.SeriesNumber, ds.SeriesDescription) == ("CT", "P9", 2, "LUNG 1mm")
    assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.PixelRepresentation) == (6, 8, 16, 1)
    assert float(ds.SliceThickness) == 3.0 and float(ds.SpacingBetweenSlices) == pytest.approx(2.5)
    # pydicom's pixel_array is the stored value; the HU come back only after applying the rescale once.
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(hu, (np.rint((arr[:, :, 1] + 1000) / 2) * 2 - 1000).T)
    assert all(len(p.stem) == 24 and set(p.stem) <= set("0123456789abcdef") for p in paths)


def test_seed_gives_identical_bytes_and_distinct_uids(tmp_path):
    arr = random_hu((8, 6, 4))
    kw = dict(series_number=1, study_uid="1.2.3", patient_id="P", uid_seed="case-7")
    a = write_dicom_series(arr, make_affine(), tmp_path / "a", **kw)
    b = write_dicom_series(arr, make_affine(), tmp_path / "b", **kw)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    c = write_dicom_series(arr, make_affine(), tmp_path / "c", **{**kw, "series_number": 2})
    uids = {pydicom.dcmread(p).SOPInstanceUID for p in a + c}
    assert len(uids) == 8
    for p in a:
        assert p.stem != pydicom.dcmread(p).SOPInstanceUID  # name is a hash, not the UID or an index


def test_extra_tags_override_and_delete(tmp_path):
    paths = write_dicom_series(
        random_hu((8, 6, 2)), make_affine(), tmp_path, series_number=5, study_uid="1.2", patient_id="P",
        extra_tags={"SeriesNumber": None, "KVP": "100"},
    )  # fmt: skip
    ds = pydicom.dcmread(paths[0])
    assert "SeriesNumber" not in ds and ds.KVP == "100"


@pytest.mark.parametrize("ts", ["rle", "jpeg2000_lossless", "jpeg_ls_lossless", "implicit_le"])
def test_compressed_roundtrip(tmp_path, ts):
    if not encoder_available(ts):
        pytest.skip(f"no encoder for {ts} here")
    arr = random_hu((40, 36, 3))
    paths = write_dicom_series(arr, OBLIQUE, tmp_path, series_number=1, study_uid="1.2", patient_id="P",
                               transfer_syntax=ts, uid_seed="x")  # fmt: skip
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID.is_compressed == (ts != "implicit_le")
    sitk_arr, sitk_aff = sitk_read_series(tmp_path)
    np.testing.assert_array_equal(sitk_arr, arr)
    np.testing.assert_allclose(sitk_aff, OBLIQUE, atol=1e-4)


def test_rejects_values_outside_int16(tmp_path):
    arr = np.full((4, 4, 2), 40000.0)
    with pytest.raises(ValueError, match="does not fit int16"):
        write_dicom_series(arr, make_affine(), tmp_path, series_number=1, study_uid="1.2", patient_id="P")
    assert not list(tmp_path.glob("*.dcm"))
