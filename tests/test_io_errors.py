"""Every bad input gives a VolumeReadError that names the file and says what is wrong."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pydicom
import pytest

from helpers_dicom import make_affine, pydicom_testdata, random_hu, write_series
from radfinder.errors import VolumeReadError
from radfinder.io import load_volume


def _raises(path, pattern, **kw):
    with pytest.raises(VolumeReadError, match=pattern) as info:
        load_volume(path, **kw)
    return info.value


def test_truncated_dicom_pixel_data_names_the_file(tmp_path):
    _, _, paths = write_series(tmp_path)
    victim = paths[3]
    victim.write_bytes(victim.read_bytes()[:-200])
    err = _raises(tmp_path, "cannot decode pixel data")
    assert err.path == victim


def test_pydicom_truncated_file():
    err = _raises(pydicom_testdata("MR_truncated.dcm"), "cannot decode pixel data", allow_non_ct=True)
    assert err.path.name == "MR_truncated.dcm"


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's own complaint about the damage
def test_corrupt_dicom_header_names_the_file(tmp_path):
    _, _, paths = write_series(tmp_path)
    data = bytearray(paths[2].read_bytes())
    data[132:400] = b"\xff" * 268  # keep the DICM magic, wreck the meta group
    paths[2].write_bytes(bytes(data))
    err = _raises(tmp_path, "damaged DICOM header")
    assert err.path == paths[2]


def test_empty_folder(tmp_path):
    _raises(tmp_path, r"no DICOM images found \(empty folder\)")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    _raises(tmp_path, r"1 files, none with a DICOM \(DICM\) header")


def test_non_ct_modality(tmp_path):
    _raises(pydicom_testdata("MR_small.dcm"), r"modalities present: MR; pass allow_non_ct=True")
    write_series(tmp_path, modality="PT")
    _raises(tmp_path, "modalities present: PT")
    assert load_volume(tmp_path, allow_non_ct=True).meta["series"]["modality"] == "PT"


def test_4d_dicom_duplicate_positions(tmp_path):
    for phase in (1, 2):
        write_series(tmp_path / f"t{phase}", random_hu(seed=phase), series_uid="1.2.3.4.5", uid_seed=f"ph{phase}",
                     extra_tags={"TemporalPositionIdentifier": phase})  # fmt: skip
    _raises(tmp_path, r"slice positions hold more than one image.*2 TemporalPositionIdentifier values: a 4D")


def test_4d_nifti_and_singleton_4th_axis(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.int16), np.eye(4)), tmp_path / "t.nii.gz")
    _raises(tmp_path / "t.nii.gz", r"4D with shape \(4, 5, 6, 3\)")
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 1), np.int16), np.eye(4)), tmp_path / "s.nii.gz")
    assert load_volume(tmp_path / "s.nii.gz").shape == (4, 5, 6)


def test_4d_nrrd(tmp_path):
    import nrrd

    dirs = np.vstack([np.full(3, np.nan), np.eye(3)])
    header = {"space": "left-posterior-superior", "space directions": dirs, "kinds": ["list", "domain", "domain",
              "domain"]}  # fmt: skip
    nrrd.write(str(tmp_path / "t.nrrd"), np.zeros((2, 4, 5, 6), np.int16), header)
    _raises(tmp_path / "t.nrrd", r"4D / multi-component")


def test_mixed_image_sizes(tmp_path):
    write_series(tmp_path / "a", random_hu((12, 10, 3)), series_uid="1.2.3.9", uid_seed="a")
    write_series(tmp_path / "b", random_hu((12, 8, 2)), make_affine(origin=(10, -20, 40)), series_uid="1.2.3.9",
                 uid_seed="b")  # fmt: skip
    _raises(tmp_path, r"mixes image sizes \(rows x columns\): 8x12: 2 images, 10x12: 3 images")


def test_mixed_orientations_pydicom_scouts():
    _raises(pydicom_testdata("dicomdirtests/98892001/CT2N"), "mixes image orientations", series=4)


def test_gantry_tilt_rejected_then_kept_as_shear(tmp_path):
    tilted = make_affine(spacing=(0.8, 0.8, 2.0))
    tilted[:3, 2] = [0.0, 2.0 * np.sin(np.radians(15)), 2.0 * np.cos(np.radians(15))]  # slices slide anteriorly
    arr, _, paths = write_series(tmp_path, random_hu((10, 12, 6)), tilted)
    err = _raises(tmp_path, r"gantry tilt or oblique stack, about 15\.00 degrees.*tolerance 0\.200 mm")
    assert str(tmp_path) in str(err)
    vol = load_volume(tmp_path, allow_tilt=True)
    np.testing.assert_allclose(vol.affine, tilted, atol=1e-4)
    np.testing.assert_array_equal(vol.array, arr)
    assert vol.meta["tilt_deg"] == pytest.approx(15.0, abs=0.01)


def test_small_tilt_within_tolerance_is_accepted(tmp_path):
    aff = make_affine(spacing=(0.8, 0.8, 2.0))
    aff[1, 2] = 0.15 / 5  # 0.15 mm sideways over 5 gaps, under the 0.2 mm (quarter pixel) tolerance
    write_series(tmp_path, random_hu((10, 12, 6)), aff)
    vol = load_volume(tmp_path)
    assert vol.affine[1, 2] == 0.0


def test_missing_slice_reports_where_and_how_big(tmp_path):
    _, _, paths = write_series(tmp_path, random_hu((10, 12, 8)), make_affine(spacing=(0.8, 0.8, 2.5)))
    paths[4].unlink()  # instance 5
    _raises(tmp_path, r"median 2\.500 mm.*5\.000 mm between image 4 .* and image 6 .*~1 missing slice")


def test_uneven_spacing(tmp_path):
    _, aff, paths = write_series(tmp_path, random_hu((10, 12, 6)), make_affine(spacing=(0.8, 0.8, 2.0)))
    ds = pydicom.dcmread(paths[2])
    ipp = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 0.7]
    ds.save_as(paths[2])
    _raises(tmp_path, r"2 irregular gap.*2\.700 mm between image 2 .*uneven spacing; 1\.300 mm between image 3")


def test_multiframe_rejected(tmp_path):
    write_series(tmp_path, extra_tags={"NumberOfFrames": 2})
    _raises(tmp_path, r"multi-frame image \(2 frames\)")


def test_nan_and_inf_voxels(tmp_path):
    data = np.zeros((4, 5, 6), np.float32)
    data[1, 2, 3] = np.nan
    data[3, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "n.nii.gz")
    _raises(tmp_path / "n.nii.gz", r"2 non-finite voxels \(1 NaN, 1 inf\) of 120; first at voxel \(1, 2, 3\)")
    np.savez(tmp_path / "n.npz", ct=data)
    _raises(tmp_path / "n.npz", "non-finite voxels")


def test_unsupported_extension(tmp_path):
    (tmp_path / "scan.mha").write_bytes(b"ObjectType = Image\n")
    _raises(tmp_path / "scan.mha", r"unsupported file type \.mha")


def test_missing_path(tmp_path):
    _raises(tmp_path / "nope.nii.gz", "no such file")


def test_truncated_nifti(tmp_path):
    path = tmp_path / "t.nii.gz"
    nib.save(nib.Nifti1Image(random_hu((20, 20, 20)), np.eye(4)), path)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    _raises(path, "cannot read NIfTI")


def test_corrupt_nrrd_and_npz(tmp_path):
    (tmp_path / "c.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4\n\n")
    _raises(tmp_path / "c.nrrd", "cannot read NRRD")
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04garbage")
    _raises(tmp_path / "c.npz", "cannot read NPZ")
    np.savez(tmp_path / "k.npz", image=np.zeros((2, 2, 2)))
    _raises(tmp_path / "k.npz", r"no array 'ct' in NPZ \(arrays present: image\)")


def test_nrrd_without_orientation(tmp_path):
    import nrrd

    nrrd.write(str(tmp_path / "p.nrrd"), np.zeros((3, 4, 5), np.int16))
    _raises(tmp_path / "p.nrrd", "no 'space' field")
