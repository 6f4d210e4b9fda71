"""Study folders: series selection, the per-instance index and lookups like "series 4, image 38"."""

from __future__ import annotations

import numpy as np
import pytest

from helpers_dicom import LPS, make_affine, pydicom_testdata, random_hu, write_series
from radfinder.errors import VolumeReadError
from radfinder.io import StudyIndex, index_dicom_study, load_volume

STUDY = "1.2.826.0.1.3680043.8.498.77"


@pytest.fixture
def study(tmp_path):
    """A study with a thin lung series (#4, 12 images), a thick soft-tissue one (#5, 4 images) covering the same
    range, a 2-image localizer (#1) and a 1-image MR-like series (#9)."""
    thin = make_affine(spacing=(0.7, 0.7, 1.0), origin=(0.0, 0.0, 0.0))
    thick = make_affine(spacing=(0.7, 0.7, 3.0), origin=(0.0, 0.0, 1.0))
    common = dict(study_uid=STUDY, patient_id="P7")
    write_series(tmp_path / "s4", random_hu((12, 10, 12), 1), thin, series_number=4,
                 series_description="LUNG 1.0 B70f", instance_order="descending", **common)  # fmt: skip
    write_series(tmp_path / "s5", random_hu((12, 10, 4), 2), thick, series_number=5,
                 series_description="SOFT TISSUE 3.0", **common)  # fmt: skip
    write_series(tmp_path / "scout", random_hu((12, 10, 2), 3), thin, series_number=1, series_description="Topogram",
                 extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, **common)  # fmt: skip
    write_series(tmp_path / "mr", random_hu((12, 10, 1), 4), thin, series_number=9, modality="MR", **common)
    (tmp_path / "notes.txt").write_text("not DICOM")
    return tmp_path


def test_default_is_largest_ct_series_and_others_listed(study):
    vol = load_volume(study)
    assert vol.meta["series"]["number"] == 4 and vol.meta["series"]["n_instances"] == 12
    others = {s["number"]: s for s in vol.meta["other_series"]}
    assert set(others) == {1, 5, 9}
    assert others[5]["description"] == "SOFT TISSUE 3.0" and others[9]["modality"] == "MR"


@pytest.mark.parametrize("selector", [5, "5", "soft tissue"])
def test_select_by_number_or_description(study, selector):
    vol = load_volume(study, series=selector)
    assert vol.meta["series"]["number"] == 5 and vol.shape == (12, 10, 4)
    assert vol.spacing[2] == pytest.approx(3.0)


def test_selector_errors_list_the_series(study):
    with pytest.raises(VolumeReadError, match=r"no series with SeriesNumber 7.*number 4 'LUNG 1.0 B70f'.*number 5"):
        load_volume(study, series=7)
    with pytest.raises(VolumeReadError, match=r"2 series match a SeriesDescription containing '.0'"):
        load_volume(study, series=".0")
    with pytest.raises(VolumeReadError, match=r"modality MR, not CT; pass allow_non_ct=True"):
        load_volume(study, series=9)
    assert load_volume(study, series=9, allow_non_ct=True).shape == (12, 10, 1)


def test_index_lookup_places_images_of_other_reconstructions(study):
    index = index_dicom_study(study)
    assert isinstance(index, StudyIndex)
    assert index.series_numbers() == [1, 4, 5, 9]
    vol4 = load_volume(study, series=4)
    # Series 4 counts down with z: image 12 is the lowest slice (volume index 0).
    inst = index.lookup(4, 12)
    assert inst.instance_number == 12 and inst.path == vol4.meta["instances"][0].path
    np.testing.assert_allclose(inst.position, vol4.world_of([0, 0, 0]), atol=1e-4)
    # A reference to the thick series maps into the thin volume: series 5 image 2 sits at z = 1 + 3 mm.
    ref = index.lookup(5, 2)
    centre = ref.plane_affine() @ [6, 5, 0, 1]
    ijk = np.linalg.solve(vol4.affine, centre)[:3]
    np.testing.assert_allclose(ijk, [6, 5, 4], atol=1e-4)
    assert ref.series_description == "SOFT TISSUE 3.0" and ref.slice_thickness == pytest.approx(3.0)


def test_index_lookup_errors(study):
    index = index_dicom_study(study)
    with pytest.raises(KeyError, match=r"no image 40 in series 4 \(series 4 has images 1\.\.12\)"):
        index.lookup(4, 40)
    with pytest.raises(KeyError, match=r"no series 6"):
        index.lookup(6, 1)


def test_index_of_pydicom_study_with_cr_and_ct():
    index = index_dicom_study(pydicom_testdata("dicomdirtests/77654033"))
    assert index.series_numbers() == [1, 2, 3]
    cr = index.lookup(1, 1)
    assert cr.modality == "CR" and cr.position is None and not cr.has_geometry
    ct = index.lookup(2, 181)
    # ImagePositionPatient (-125, -128.100006, 104.269997) in LPS
    np.testing.assert_allclose(ct.position, LPS[:3, :3] @ [-125.0, -128.100006, 104.269997], atol=1e-5)
    assert ct.pixel_spacing == pytest.approx((0.488281, 0.488281))


def test_index_empty_folder(tmp_path):
    with pytest.raises(VolumeReadError, match="no DICOM images found"):
        index_dicom_study(tmp_path)
