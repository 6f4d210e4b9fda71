"""Depth mapping of referenced DICOM images into preprocessed volumes, with hand-built geometry.

Expected cells are computed by hand from the preprocessing rules (RadFinder spec: 3 mm depth voxels, 4 voxels per
cell, largest-multiple centre crop), not through `Geometry`, and checked once against SimpleITK on real files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radfinder.data.depth_mapping import (
    DepthMapper,
    furthest_reason,
    place_instance,
    sample_stride,
)
from radfinder.io.dicom_index import InstanceGeometry, StudyIndex
from radfinder.preprocess.geometry import plan_geometry
from radfinder.preprocess.spec import PreprocessSpec

SPEC = PreprocessSpec()
# Training volume: 200 x 200 x 100 voxels, 0.8 mm in-plane, 2.5 mm slices, RAS, first slice at z = -100.
# Depth: spaced size round(99 * 2.5 / 3 + 1) = round(83.5) = 84 (half to even), crop 64, start 84 // 2 - 32 = 10.
# So final depth voxel d sits at z = -100 + 3 * (d + 10) = -70 + 3 d; 16 cells of 12 mm; cell c covers
# z in [-70 + 12 c - 1.5, -70 + 12 c + 10.5).
Z0, SHAPE = -100.0, (200, 200, 100)
# In-plane: spaced round(199 * 0.8 / 0.75 + 1) = 213, crop 128, start 106 - 64 = 42: x in [-60 + 0.75 * 42 ...].


def _vol_affine(flip_z: bool = False) -> np.ndarray:
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    aff[:3, 3] = (-80.0, -80.0, Z0)
    if flip_z:  # same voxels stored top slice first: z step negative, origin at the top
        aff[2, 2] = -2.5
        aff[2, 3] = Z0 + 2.5 * (SHAPE[2] - 1)
    return aff


def _hand_cell(z: float) -> int:
    return int(np.floor(((z + 70.0) / 3.0 + 0.5) / 4))


def _inst(z: float, series=3, number=1, *, rows=64, cols=64, spacing=2.0, origin_xy=(-60.0, -60.0), uid=None,
          row_cos=(1.0, 0.0, 0.0), col_cos=(0.0, 1.0, 0.0), position=None) -> InstanceGeometry:  # fmt: skip
    return InstanceGeometry(
        series_number=series,
        instance_number=number,
        sop_instance_uid=uid or f"1.2.{series}.{number}",
        series_instance_uid=f"1.2.{series}",
        path=Path(f"/x/{series}/{number}.dcm"),
        rows=rows,
        columns=cols,
        pixel_spacing=(spacing, spacing),
        position=position or (origin_xy[0], origin_xy[1], z),
        row_cosines=row_cos,
        col_cosines=col_cos,
        slice_thickness=2.5,
    )


@pytest.fixture(scope="module")
def geom():
    g = plan_geometry(SHAPE, _vol_affine(), SPEC)
    assert g.crop_start[2] == 10 and g.shape[2] == 64 and g.n_depth_cells == 16  # the hand computation above
    return g


@pytest.mark.parametrize("z", [-70.0, -71.4, -58.6, -58.4, 0.0, 33.3, 110.0, 118.4])
def test_axial_plane_lands_in_hand_computed_cell(geom, z):
    p = place_instance(_inst(z), geom)
    assert p.depth_cell == _hand_cell(z)
    assert p.share == 1.0 and p.n_inside > 0
    assert p.world_z_mm == pytest.approx(z)
    lo = -70.0 + 12 * p.depth_cell - 1.5
    assert lo <= z < lo + 12
    assert p.cell_world_z_mm == pytest.approx(lo + 6.0)
    assert p.depth_mm == pytest.approx(z - (-70.0 - 1.5))


def test_flipped_training_volume_and_descending_series_give_the_same_cells(geom):
    flipped = plan_geometry(SHAPE, _vol_affine(flip_z=True), SPEC)
    np.testing.assert_allclose(flipped.affine, geom.affine, atol=1e-9)
    # A series with InstanceNumber running down from the top (descending): numbers differ, positions decide.
    zs = Z0 + 5.0 * np.arange(50)
    index = StudyIndex(Path("/x"), [_inst(float(z), series=5, number=50 - k) for k, z in enumerate(zs)])
    for g in (geom, flipped):
        m = DepthMapper(index, g)
        for k, z in enumerate(zs):
            res = m.resolve(5, 50 - k)
            expect = _hand_cell(z)
            if 0 <= expect < 16:
                assert res.resolved and res.placement.depth_cell == expect, (z, res)
            else:
                assert res.reason == "outside_crop"


def test_other_reconstruction_with_other_spacing_maps_through_world_z(geom):
    # Training volume: the 2.5 mm one; the report cites a 5 mm reconstruction whose slices sit between its voxels.
    z = -70.0 + 12 * 8 - 1.51  # just below the top edge of cell 7 (-70 + 12 * 8 - 1.5)
    assert place_instance(_inst(z, spacing=0.6, rows=512, cols=512, origin_xy=(-150, -150)), geom).depth_cell == 7
    assert place_instance(_inst(z + 0.02), geom).depth_cell == 8  # just past it
    # A series starting at a different x/y with another pixel spacing lands by z alone.
    a = place_instance(_inst(z, spacing=0.5, origin_xy=(-20, 10)), geom)
    assert a.depth_cell == 7


def test_plane_outside_the_crop_is_dropped(geom):
    index = StudyIndex(Path("/x"), [_inst(-75.0, number=1), _inst(125.0, number=2), _inst(0.0, number=3,
                                    origin_xy=(400.0, 400.0))])  # fmt: skip
    m = DepthMapper(index, geom)
    assert m.resolve(3, 1).reason == "outside_crop"  # below the crop (cropped-away slices at z < -71.5)
    assert m.resolve(3, 2).reason == "outside_crop"  # above it (z >= -70 + 3 * 63.5 = 120.5)
    assert m.resolve(3, 3).reason == "outside_crop"  # depth inside, but the whole image lies beside the crop
    assert m.resolve(3, 1).instance is not None


def test_depth_edges_of_the_crop(geom):
    assert place_instance(_inst(-71.5), geom).depth_cell == 0  # first voxel's lower edge is inside
    assert place_instance(_inst(-71.51), geom).depth_cell is None
    assert place_instance(_inst(120.49), geom).depth_cell == 15
    assert place_instance(_inst(120.5), geom).depth_cell is None


def test_padding_is_not_inside():
    # A 60 mm scan is padded to a 96 mm window: planes over the padding point at nothing and are dropped.
    aff = np.diag([0.8, 0.8, 3.0, 1.0])
    g = plan_geometry((200, 200, 21), aff, SPEC)
    assert g.crop_start[2] < 0 and g.valid_box[2] == (-g.crop_start[2], -g.crop_start[2] + 21)
    assert place_instance(_inst(0.0, origin_xy=(0, 0)), g).depth_cell == (-g.crop_start[2]) // 4
    assert place_instance(_inst(-6.0, origin_xy=(0, 0)), g).depth_cell is None
    assert place_instance(_inst(60.0, origin_xy=(0, 0)), g).depth_cell == (-g.crop_start[2] + 20) // 4
    assert place_instance(_inst(63.0, origin_xy=(0, 0)), g).depth_cell is None


def _brute_force_cell(inst: InstanceGeometry, g) -> tuple[int | None, float]:
    """Pixel by pixel with Geometry.world_to_voxel: an independent path to the same count."""
    counts: dict[int, int] = {}
    aff = inst.plane_affine()
    lo_hi = g.valid_box
    for r in range(inst.rows):
        for c in range(inst.columns):
            w = (aff @ np.array([c, r, 0.0, 1.0]))[:3]
            v = g.world_to_voxel(w)
            if all(lo - 0.5 <= x < hi - 0.5 for x, (lo, hi) in zip(v, lo_hi, strict=True)):
                cell = int(np.floor((v[2] + 0.5) / 4))
                counts[cell] = counts.get(cell, 0) + 1
    if not counts:
        return None, 0.0
    best = max(sorted(counts), key=lambda k: counts[k])
    return best, counts[best] / sum(counts.values())


@pytest.mark.parametrize("angle", [0.0, 20.0, 90.0])
def test_tilted_and_coronal_planes_take_the_cell_with_most_pixels(geom, angle):
    t = np.deg2rad(angle)
    # Rows tilted about x by `angle` (90 = a coronal reformat, rows running down the patient).
    col = (0.0, np.cos(t), -np.sin(t))
    inst = _inst(0.0, rows=48, cols=40, spacing=2.5, row_cos=(1.0, 0.0, 0.0), col_cos=col,
                 position=(-50.0, -30.0, 20.0))  # fmt: skip
    p = place_instance(inst, geom)
    cell, share = _brute_force_cell(inst, geom)
    assert p.depth_cell == cell
    assert p.share == pytest.approx(share)
    if angle == 90.0:
        assert p.share < 0.5  # a coronal image spans several cells


def test_subsampling_stride_and_large_images(geom):
    assert sample_stride(512, 512) == 1
    assert sample_stride(1024, 1024) == 2
    assert sample_stride(513, 512) == 2
    assert sample_stride(100, 100, max_pixels=10) == 34  # the smallest stride with ceil(100 / s) ** 2 <= 10
    big = _inst(33.0, rows=1024, cols=1024, spacing=0.4, origin_xy=(-200, -200))
    p = place_instance(big, geom)
    assert p.n_sampled == 512 * 512 and p.depth_cell == _hand_cell(33.0)


def test_mapper_reasons():
    g = plan_geometry(SHAPE, _vol_affine(), SPEC)
    no_geo = InstanceGeometry(7, 1, "1.7.1", "1.7", Path("/x/7/1"), 64, 64, None, None, None, None, None)
    index = StudyIndex(
        Path("/x"),
        [_inst(0.0, series=3, number=1), _inst(0.0, series=4, number=1, uid="a"),
         _inst(3.0, series=4, number=1, uid="b"), no_geo],
    )  # fmt: skip
    m = DepthMapper(index, g)
    assert m.resolve(3, 1).resolved
    assert m.resolve(None, 1).reason == "no_series"
    assert m.resolve(9, 1).reason == "unknown_series"
    assert m.resolve(3, 2).reason == "missing_image"
    assert m.resolve(4, 1).reason == "ambiguous_image"
    assert m.resolve(7, 1).reason == "no_geometry"
    assert DepthMapper(None, g).resolve(3, 1).reason == "no_dicom"
    assert furthest_reason(["no_series", "outside_crop", "missing_image"]) == "outside_crop"
    assert furthest_reason(["unknown_series", "no_dicom"]) == "unknown_series"


def test_place_plane_matches_sitk_on_written_files(tmp_path):
    """Independent check: SimpleITK reads the referenced DICOM file and the preprocessed NIfTI, and maps the
    plane centre and the chosen cell centre between them."""
    import nibabel as nib
    import SimpleITK as sitk

    from radfinder.io import load_volume, write_dicom_series
    from radfinder.io.dicom_index import index_dicom_study
    from radfinder.preprocess.apply import apply_spec

    rng = np.random.default_rng(0)
    # Training volume: 70 x 60 x 45 at 1.9 mm in-plane, 2.5 mm slices, stored LPS-style (x and y flipped).
    tv_aff = np.diag([-1.9, -1.9, 2.5, 1.0])
    tv_aff[:3, 3] = (60.0, 50.0, -40.0)
    tv = rng.integers(-1000, 400, size=(70, 60, 45)).astype(np.int16)
    nib.save(nib.Nifti1Image(tv, tv_aff), tmp_path / "train.nii.gz")
    # The cited series: another reconstruction, 5 mm slices, descending numbers, shifted grid.
    ref_aff = np.diag([1.9, 1.9, 5.0, 1.0])
    ref_aff[:3, 3] = (-70.0, -60.0, -43.7)
    write_dicom_series(rng.integers(-1000, 400, size=(70, 60, 24)).astype(np.int16), ref_aff, tmp_path / "dcm",
                       series_number=6, study_uid="1.2.3", patient_id="P", instance_order="descending",
                       uid_seed="t")  # fmt: skip
    pre = apply_spec(load_volume(tmp_path / "train.nii.gz"), SPEC)
    img = nib.load(tmp_path / "train.nii.gz")
    g = plan_geometry(img.shape, img.affine, SPEC)
    np.testing.assert_allclose(g.affine, pre.affine)  # the header-only plan is apply_spec's plan
    nib.save(nib.Nifti1Image(pre.image.astype(np.float32), pre.affine), tmp_path / "pre.nii.gz")
    pre_itk = sitk.ReadImage(str(tmp_path / "pre.nii.gz"))
    m = DepthMapper(index_dicom_study(tmp_path / "dcm"), g)
    resolved = 0
    for inst in m.index.instances:
        res = m.resolve(6, inst.instance_number)
        dcm = sitk.ReadImage(str(inst.path))
        centre = dcm.TransformContinuousIndexToPhysicalPoint(((dcm.GetWidth() - 1) / 2, (dcm.GetHeight() - 1) / 2, 0))
        k = pre_itk.TransformPhysicalPointToContinuousIndex(centre)[2]
        expect = int(np.floor((k + 0.5) / 4))
        if not 0 <= k + 0.5 < pre.image.shape[2]:
            assert res.reason == "outside_crop"
            continue
        resolved += 1
        p = res.placement
        assert p.depth_cell == expect
        assert p.world_z_mm == pytest.approx(centre[2], abs=1e-4)
        cx, cy = (pre.image.shape[0] - 1) / 2, (pre.image.shape[1] - 1) / 2
        cell_centre = pre_itk.TransformContinuousIndexToPhysicalPoint((cx, cy, expect * 4 + 1.5))
        assert p.cell_world_z_mm == pytest.approx(cell_centre[2], abs=1e-4)
    assert resolved >= 15
