"""Anatomy masks: reading TotalSegmentator outputs (multilabel file, per-class folder, the synthetic cohort's
layout), grouping classes, volumes, resampling through the preprocessing contract, content hash, CLI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from radfinder.cli import main
from radfinder.data.anatomy import (
    anatomy_masks_on_grid,
    anatomy_volumes,
    labels_on_grid,
    load_anatomy_groups,
    read_segmentation,
    touches_border,
)
from radfinder.errors import ConfigError, VolumeReadError
from radfinder.io.volume import Volume
from radfinder.preprocess import PreprocessSpec, apply_spec

LOBES = (10, 11, 12, 13, 14)


def _affine(spacing=(1.5, 1.2, 2.5), origin=(-40.0, 30.0, -100.0), flip_x=True) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    if flip_x:
        a[0, 0] = -a[0, 0]  # an LAS volume: reorientation has work to do
    a[:3, 3] = origin
    return a


def _hand_built_labels(shape=(40, 36, 30), seed=0) -> np.ndarray:
    """Blocks of the four anatomies' classes, a trachea, and a synthetic-cohort lesion id (200 + finding)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    lab[2:12, 3:20, 4:25] = 10
    lab[2:12, 20:33, 4:25] = 11
    lab[25:37, 3:15, 4:25] = 12
    lab[25:37, 15:22, 4:25] = 13
    lab[25:37, 22:33, 4:25] = 14
    lab[15:22, 10:20, 8:16] = 51
    lab[15:18, 20:23, 8:12] = 61
    lab[18:21, 25:28, 2:28] = 15
    lab[14:17, 24:27, 5:29] = 52
    lab[20:22, 5:8, 20:29] = 16
    lab[5:7, 5:7, 10:12] = 210  # "Lung nodule" lesion (200 + its 1-based CT-RATE index), inside the left upper lobe
    lab[38:40, 3:33, 4:10] = 213  # "Pleural effusion" lesion: outside the lobes
    noise = rng.random(shape) < 0.01
    lab[noise] = 0
    return lab


def _count(lab: np.ndarray, ids) -> int:
    return int(np.isin(lab, list(ids)).sum())


def test_real_totalsegmentator_ml_against_simpleitk(real_data, capsys):
    path = real_data / "totalsegmentator_ct" / "example_ct_sm" / "example_seg.nii.gz"
    if not path.is_file():
        pytest.skip(f"absent: {path}")
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)  # independent reader; (z, y, x) order does not matter for counts
    voxel_ml = float(np.prod(img.GetSpacing())) / 1000.0
    expect = {
        "lung": _count(arr, LOBES),
        "heart": _count(arr, (51, 61)),
        "esophagus": _count(arr, (15,)),
        "aorta": _count(arr, (52,)),
    }
    assert expect["lung"] > 0 and expect["aorta"] > 0 and expect["heart"] == 0 and expect["esophagus"] == 0
    vols = anatomy_volumes(read_segmentation(path))
    assert {a: v["voxels"] for a, v in vols.items()} == expect
    for a, v in vols.items():
        assert v["ml"] == pytest.approx(expect[a] * voxel_ml, abs=1e-3)
    assert main(["anatomy", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {a: v["voxels"] for a, v in out["anatomies"].items()} == expect
    assert out["anatomies"]["heart"] == {"voxels": 0, "ml": 0.0}


def test_synthetic_cohort_layout_and_folder_agree(tmp_path):
    lab = _hand_built_labels()
    aff = _affine()
    masks = tmp_path / "cohort" / "masks"
    masks.mkdir(parents=True)
    names = {"10": "lung_upper_lobe_left", "11": "lung_lower_lobe_left", "12": "lung_upper_lobe_right",
             "13": "lung_middle_lobe_right", "14": "lung_lower_lobe_right", "15": "esophagus", "16": "trachea",
             "51": "heart", "52": "aorta", "61": "atrial_appendage_left", "210": "lesion: Lung nodule",
             "213": "lesion: Pleural effusion"}  # fmt: skip
    (masks / "classes.json").write_text(json.dumps(names))
    ml_path = masks / "train_1_a_1.nii.gz"
    nib.save(nib.Nifti1Image(lab, aff), str(ml_path))
    seg = read_segmentation(ml_path)
    assert seg.names[210] == "lesion: Lung nodule"
    vols = anatomy_volumes(seg)
    voxel_ml = 1.5 * 1.2 * 2.5 / 1000
    # lesion voxels override their organ's id; a nodule is still lung, a pleural effusion is not
    expect = {"lung": _count(lab, (*LOBES, 210)), "heart": _count(lab, (51, 61)), "esophagus": _count(lab, (15,)),
              "aorta": _count(lab, (52,))}  # fmt: skip
    assert all(v > 0 for v in expect.values()) and _count(lab, (210,)) > 0 and _count(lab, (213,)) > 0
    assert {a: v["voxels"] for a, v in vols.items()} == expect
    assert vols["lung"]["ml"] == pytest.approx(expect["lung"] * voxel_ml, abs=1e-3)
    assert anatomy_volumes(seg, lesions=False)["lung"]["voxels"] == _count(lab, LOBES)
    assert np.array_equal(seg.masks(load_anatomy_groups())["lung"], np.isin(lab, (*LOBES, 210)))
    # the same classes as TotalSegmentator's per-class folder (one binary file per class, all of them written)
    folder = tmp_path / "seg_folder"
    folder.mkdir()
    for cid, name in names.items():
        nib.save(nib.Nifti1Image((lab == int(cid)).astype(np.uint8), aff), str(folder / f"{name}.nii.gz"))
    fvols = anatomy_volumes(read_segmentation(folder))
    assert fvols == anatomy_volumes(seg, lesions=False)  # TotalSegmentator's folder has no lesion classes
    m = read_segmentation(folder).masks(load_anatomy_groups())
    assert np.array_equal(m["heart"], np.isin(lab, (51, 61)))


def test_user_groups_by_name_and_id(tmp_path):
    lab = _hand_built_labels()
    p = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(lab, _affine()), str(p))
    y = tmp_path / "groups.yaml"
    y.write_text("anatomies:\n  left_lung: [lung_upper_lobe_left, 11]\n  airway: [16]\n  nodules: 210\n")
    g = load_anatomy_groups(y)
    vols = anatomy_volumes(read_segmentation(p, g), g)
    assert list(vols) == ["left_lung", "airway", "nodules"]
    assert vols["left_lung"]["voxels"] == _count(lab, (10, 11))
    assert vols["airway"]["voxels"] == _count(lab, (16,))
    assert vols["nodules"]["voxels"] == _count(lab, (210,))
    bad = tmp_path / "bad.yaml"
    bad.write_text("anatomies:\n  lung: []\n")
    with pytest.raises(ConfigError, match="non-empty"):
        load_anatomy_groups(bad)


def test_bad_segmentations_are_refused(tmp_path):
    p = tmp_path / "frac.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 0.5, np.float32), np.eye(4)), str(p))
    with pytest.raises(VolumeReadError, match="non-integer"):
        read_segmentation(p)
    with pytest.raises(VolumeReadError, match="no such"):
        read_segmentation(tmp_path / "missing.nii.gz")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VolumeReadError, match="no per-class"):
        read_segmentation(empty)
    assert main(["anatomy", str(tmp_path / "missing.nii.gz")]) == 2


SPEC = PreprocessSpec(spacing=(2.0, 2.0, 3.0), window=(16, 16, 8), depth_tokens_per_window=4)


@pytest.mark.parametrize("flip_x", [True, False])
def test_masks_land_on_the_preprocessed_grid(flip_x):
    lab = _hand_built_labels()
    aff = _affine(flip_x=flip_x)
    seg = read_segmentation_from(lab, aff)
    groups = load_anatomy_groups()
    masks, m_aff = anatomy_masks_on_grid(seg, groups, SPEC)
    image = apply_spec(Volume(np.zeros(lab.shape, np.int16), aff), SPEC)
    assert np.allclose(m_aff, image.affine)
    ref_spec = SPEC.model_copy(update={"interpolation": "nearest", "hu_window": (0.0, 1.0), "dtype": "float32"})
    for a, m in masks.items():
        assert m.shape == image.image.shape
        # reference: the anatomy's indicator image through apply_spec itself with nearest sampling
        ind = apply_spec(Volume(np.isin(lab, groups.ids_of(a, seg.names)).astype(np.int16), aff), ref_spec)
        assert np.array_equal(m, ind.image > 0.5), a
        assert m.sum() > 0


def read_segmentation_from(lab: np.ndarray, aff: np.ndarray):
    from radfinder.data.anatomy import Segmentation

    return Segmentation(lab, aff, {i: n for n, i in load_anatomy_groups().classes.items()})


def test_mask_on_another_grid_is_sampled_in_world_space():
    """A mask on a finer grid than the image: each preprocessed voxel takes the nearest mask voxel's label."""
    lab = _hand_built_labels(shape=(40, 36, 30))
    mask_aff = _affine(spacing=(1.0, 1.0, 1.0), origin=(-20.0, 10.0, -50.0), flip_x=False)
    seg = read_segmentation_from(lab, mask_aff)
    img_shape, img_aff = (24, 20, 12), _affine(spacing=(1.6, 1.7, 2.5), origin=(18.0, 8.0, -52.0), flip_x=True)
    out, out_aff = labels_on_grid(seg, SPEC, image_shape=img_shape, image_affine=img_aff)
    image = apply_spec(Volume(np.zeros(img_shape, np.int16), img_aff), SPEC)
    assert out.shape == image.image.shape and np.allclose(out_aff, image.affine)
    rng = np.random.default_rng(1)
    idx = np.stack([rng.integers(0, n, 400) for n in out.shape], 1)
    world = idx @ out_aff[:3, :3].T + out_aff[:3, 3]
    src = np.linalg.solve(mask_aff[:3, :3], (world - mask_aff[:3, 3]).T).T
    near = np.rint(src).astype(int)
    inside = np.all((near >= 0) & (near < lab.shape), axis=1)
    expect = np.where(inside, lab[tuple(np.clip(near, 0, np.array(lab.shape) - 1).T)], 0)
    assert np.array_equal(out[tuple(idx.T)], expect)
    assert (expect > 0).sum() > 50


def test_hash_is_content_based(tmp_path):
    lab = _hand_built_labels()
    aff = _affine()
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii"
    nib.save(nib.Nifti1Image(lab, aff), str(a))
    nib.save(nib.Nifti1Image(lab.astype(np.int16), aff), str(b))
    ha, hb = read_segmentation(a).hash(), read_segmentation(b).hash()
    assert ha == hb and len(ha) == 16
    lab2 = lab.copy()
    lab2[0, 0, 0] = 52
    c = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(lab2, aff), str(c))
    assert read_segmentation(c).hash() != ha
    d = tmp_path / "d.nii.gz"
    nib.save(nib.Nifti1Image(lab, _affine(origin=(0.0, 0.0, 0.0))), str(d))
    assert read_segmentation(d).hash() != ha


def test_touches_border():
    m = np.zeros((5, 5, 5), bool)
    assert not touches_border(m)
    m[2, 2, 2] = True
    assert not touches_border(m)
    m[2, 2, 4] = True
    assert touches_border(m)


def test_lesion_class_names():
    from radfinder.data.anatomy import lesion_finding

    assert lesion_finding("lesion: Lung nodule") == "Lung nodule"
    assert lesion_finding("lesion_pleural_effusion") == "Pleural effusion"
    assert lesion_finding("lung_upper_lobe_left") is None and lesion_finding("lesion: unknown thing") is None


def test_cli_counts_on_the_preprocessed_grid(tmp_path, capsys):
    lab = _hand_built_labels()
    p = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(lab, _affine()), str(p))
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("spacing: [2.0, 2.0, 3.0]\nwindow: [16, 16, 8]\ndepth_tokens_per_window: 4\n")
    assert main(["anatomy", str(p), "--spec", str(spec_file), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    masks, _ = anatomy_masks_on_grid(read_segmentation(p), load_anatomy_groups(), SPEC)
    for a, m in masks.items():
        assert out["anatomies"][a]["grid_voxels"] == int(m.sum())
        assert out["anatomies"][a]["cut_by_crop"] == touches_border(m)
    assert out["mask_hash"] == read_segmentation(p).hash()
    assert main(["anatomy", str(p)]) == 0
    assert "lung" in capsys.readouterr().out


def test_synthetic_cohort_masks_have_all_four(tmp_path_factory):
    """The synthetic cohort's own masks (TotalSegmentator --ml format beside every volume): every study has all four
    anatomies, and the counts equal an independent count on the raw file."""
    from helpers_data import synth_cohort

    cohort = synth_cohort(tmp_path_factory)
    masks = sorted((cohort / "masks").glob("*.nii.gz"))
    assert masks, "the synthetic cohort writes a mask beside every volume"
    names = {int(k): v for k, v in json.loads((cohort / "masks" / "classes.json").read_text()).items()}
    by_name = {v: k for k, v in names.items()}
    lung_lesions = [k for k, v in names.items() if v.lower().startswith("lesion") and any(
        f.lower() in v.lower() for f in ("Emphysema", "Atelectasis", "Lung nodule", "Lung opacity", "Consolidation",
                                         "Pulmonary fibrotic sequela", "Mosaic attenuation pattern", "Bronchiectasis",
                                         "Peribronchial thickening", "Interlobular septal thickening"))]  # fmt: skip
    for path in masks:
        arr = np.asarray(nib.load(str(path)).dataobj)
        lobes = [by_name[n] for n in ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
                                      "lung_middle_lobe_right", "lung_lower_lobe_right") if n in by_name]  # fmt: skip
        vols = anatomy_volumes(read_segmentation(path))
        assert all(v["voxels"] > 0 for v in vols.values()), (path.name, vols)
        assert vols["lung"]["voxels"] == _count(arr, lobes + lung_lesions)
        assert vols["esophagus"]["voxels"] >= _count(arr, [by_name["esophagus"]])
        assert vols["aorta"]["voxels"] >= _count(arr, [by_name["aorta"]])
