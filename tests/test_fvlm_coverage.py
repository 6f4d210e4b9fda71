"""fVLM anatomy coverage in the feature cache: per spatial token against an independent count, cut flags, the
sidecar written by extraction with masks, and its invalidation when the mask or the grouping changes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from radfinder.data.anatomy import AnatomyGroups, Segmentation, load_anatomy_groups
from radfinder.errors import RadfinderError
from radfinder.features import ExtractItem, FeatureStore, extract_features
from radfinder.features.anatomy import anatomy_coverage, find_mask, groups_hash, token_coverage
from radfinder.models.light3d import Light3DWindowEncoder
from radfinder.preprocess import PreprocessSpec

GROUPS = AnatomyGroups({"lobe": 10, "heart": 51, "aorta": 52},
                       {"lung": ("lobe",), "heart": ("heart",), "aorta": ("aorta",)})  # fmt: skip


def _loop_coverage(masks, grid, window, tokens):
    """Independent reference: one explicit slice per (window, token, anatomy)."""
    hg, wg, dg = grid
    th, tw, td = (w // t for w, t in zip(window, tokens, strict=True))
    out = np.zeros((*grid, *tokens, len(masks)))
    for h in range(hg):
        for w in range(wg):
            for d in range(dg):
                for i in range(tokens[0]):
                    for j in range(tokens[1]):
                        for t in range(tokens[2]):
                            x0 = h * window[0] + i * th
                            y0 = w * window[1] + j * tw
                            z0 = d * window[2] + t * td
                            for a, m in enumerate(masks):
                                block = m[x0 : x0 + th, y0 : y0 + tw, z0 : z0 + td]
                                out[h, w, d, i, j, t, a] = np.count_nonzero(block) / block.size
    return out


def test_token_coverage_matches_an_explicit_count():
    rng = np.random.default_rng(0)
    grid, window, tokens = (2, 1, 3), (8, 12, 4), (2, 3, 2)
    shape = tuple(g * w for g, w in zip(grid, window, strict=True))
    masks = np.stack([rng.random(shape) < p for p in (0.05, 0.5, 0.0)])
    masks[2, 3:6, 1:9, 2:7] = True  # one hand-placed block crossing token and window borders
    got = token_coverage(masks, grid, window, tokens)
    assert got.shape == (*grid, *tokens, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, _loop_coverage(masks, grid, window, tokens), rtol=0, atol=1e-7)
    # token (0, 0, 0 | 0, 0, 1) spans x 0:4, y 0:4, z 2:4 (4 x 4 x 2 voxels); the block x 3:6, y 1:9, z 2:7 fills
    # x 3, y 1..3, z 2..3 of it: 1 x 3 x 2 = 6 of 32
    assert got[0, 0, 0, 0, 0, 1, 2] == pytest.approx(6 / 32)
    with pytest.raises(RadfinderError, match="does not divide"):
        token_coverage(masks, grid, window, (3, 3, 2))


def _labels(shape=(40, 24, 20)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[4:20, 2:22, 2:18] = 10  # lung: interior
    lab[22:30, 6:14, 0:9] = 51  # heart: touches the lowest slice -> cut by the field of view
    lab[32:36, 10:14, 5:8] = 52  # aorta: small, interior
    return lab


def test_anatomy_coverage_counts_voxels_and_flags_cut_anatomies():
    spec = PreprocessSpec(name="t", spacing=(1.0, 1.0, 1.0), window=(16, 16, 8), depth_tokens_per_window=2,
                          crop="none", interpolation="nearest")  # fmt: skip
    lab = _labels()
    seg = Segmentation(lab, np.eye(4), {10: "lobe", 51: "heart", 52: "aorta"}, "seg")
    cov = anatomy_coverage(seg, GROUPS, spec, (2, 2, 2))
    assert cov.names == ["lung", "heart", "aorta"]
    # crop="none" pads 40 x 24 x 20 to 48 x 32 x 24: a (3, 2, 3) window grid; the anatomies keep their voxels
    assert cov.coverage.shape == (3, 2, 3, 2, 2, 2, 3)
    np.testing.assert_array_equal(cov.voxels, [16 * 20 * 16, 8 * 8 * 9, 4 * 4 * 3])
    token_voxels = 8 * 8 * 4
    sums = cov.coverage.reshape(-1, 3).sum(axis=0) * token_voxels
    np.testing.assert_allclose(sums, cov.voxels, rtol=1e-6)
    # padding is not data: only the heart reaches the scanned volume's edge, and without a crop nothing is cut
    assert cov.touches_fov.tolist() == [False, True, False]
    assert cov.cut.tolist() == [False, False, False] and cov.valid.tolist() == [True, True, True]
    assert cov.mask_hash == seg.hash() and cov.groups_hash == groups_hash(GROUPS)


def test_anatomies_reaching_a_crop_face_are_cut():
    spec = PreprocessSpec(name="t", spacing=(1.0, 1.0, 1.0), window=(16, 16, 8), depth_tokens_per_window=2,
                          interpolation="nearest")  # largest-multiple centre crop: 40 x 24 x 20 -> 32 x 16 x 16
    lab = np.zeros((40, 24, 20), np.uint8)
    lab[4:20, 6:18, 4:16] = 10  # lung from x = 4, the first kept slice: cut
    lab[22:30, 6:14, 0:9] = 51  # heart over z = 2, the first kept depth: cut
    lab[30:34, 10:14, 5:8] = 52  # aorta inside the crop
    cov = anatomy_coverage(Segmentation(lab, np.eye(4), {10: "lobe", 51: "heart", 52: "aorta"}), GROUPS, spec,
                           (2, 2, 2))  # fmt: skip
    assert cov.coverage.shape[:3] == (2, 1, 2)
    assert cov.cut.tolist() == [True, True, False] and cov.valid.tolist() == [False, False, True]
    # an independent check of the cut rule: the crop keeps x 4:36, y 4:20, z 2:18; cut = voxels on a kept face
    kept = lab[4:36, 4:20, 2:18]
    faces = [kept[0], kept[-1], kept[:, 0], kept[:, -1], kept[:, :, 0], kept[:, :, -1]]
    for i, cid in enumerate((10, 51, 52)):
        assert cov.cut[i] == any((f == cid).any() for f in faces)


def test_groups_hash_changes_with_members_and_lesion_rule():
    g = load_anatomy_groups()
    other = AnatomyGroups(g.classes, {**g.anatomies, "heart": ("heart",)})
    assert groups_hash(g) != groups_hash(other)
    assert groups_hash(g, lesions=True) != groups_hash(g, lesions=False)
    assert groups_hash(g) == groups_hash(load_anatomy_groups())


def _Enc() -> Light3DWindowEncoder:
    """A tiny light3d with spatial tokens for 32 x 32 x 8 windows (map 2 x 2 x 2 -> 2 x 2 spatial, 2 depth)."""
    torch.manual_seed(0)
    return Light3DWindowEncoder((4, 8, 8), (0, 0, 0), 6, (32, 32, 8), (2, 2)).eval()


def _write_case(root, name, lab):
    vol = np.where(lab > 0, 40, -900).astype(np.int16)
    (root / "vols").mkdir(exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / "vols" / name))
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "masks" / name))
    (root / "masks" / "classes.json").write_text(json.dumps({"10": "lobe", "51": "heart", "52": "aorta"}))


def test_extraction_with_masks_writes_coverage_and_a_changed_mask_invalidates_it(tmp_path):
    spec = PreprocessSpec(name="t", spacing=(1.0, 1.0, 1.0), window=(32, 32, 8), depth_tokens_per_window=2,
                          crop="none")  # fmt: skip
    lab = _labels((40, 30, 16))
    _write_case(tmp_path, "a_1.nii.gz", lab)
    _write_case(tmp_path, "b_1.nii.gz", lab[::-1].copy())
    items = [ExtractItem("a_1", str(tmp_path / "vols" / "a_1.nii.gz")),
             ExtractItem("b_1", str(tmp_path / "vols" / "b_1.nii.gz")),
             ExtractItem("c_1", str(tmp_path / "vols" / "a_1.nii.gz").replace("a_1", "c_1"))]  # fmt: skip
    (tmp_path / "vols" / "c_1.nii.gz").write_bytes((tmp_path / "vols" / "a_1.nii.gz").read_bytes())  # no mask
    store = FeatureStore(tmp_path / "feat", spec, {"hash": "enc0"}, 6, spatial=True)
    enc = _Enc()
    s1 = extract_features(items, enc, store, show_progress=False, masks="auto", groups=GROUPS)
    assert not s1.failed and sorted(s1.anatomy_written) == ["a_1", "b_1"] and s1.no_mask == ["c_1"]
    rec = store.read("a_1")
    assert rec.anatomy is not None and rec.anatomy.names == ["lung", "heart", "aorta"]
    assert rec.anatomy.coverage.shape[:6] == rec.spatial.shape[:6]
    direct = anatomy_coverage(Segmentation(lab, np.eye(4), {10: "lobe", 51: "heart", 52: "aorta"}), GROUPS, spec,
                              (2, 2, 2))  # fmt: skip
    np.testing.assert_array_equal(rec.anatomy.coverage, direct.coverage)
    assert store.read("c_1").anatomy is None
    feat_bytes = store.path_of("a_1").read_bytes()

    # same masks: nothing recomputed
    s2 = extract_features(items, enc, store, show_progress=False, masks="auto", groups=GROUPS)
    assert s2.anatomy_written == [] and sorted(s2.skipped) == ["a_1", "b_1", "c_1"]

    # a changed mask: its coverage is recomputed, its image features are kept
    lab2 = lab.copy()
    lab2[32:36, 10:14, 5:8] = 0
    nib.save(nib.Nifti1Image(lab2, np.eye(4)), str(tmp_path / "masks" / "a_1.nii.gz"))
    s3 = extract_features(items, enc, store, show_progress=False, masks="auto", groups=GROUPS)
    assert s3.anatomy_written == ["a_1"]
    assert store.path_of("a_1").read_bytes() == feat_bytes
    new = store.read("a_1").anatomy
    assert new.mask_hash != rec.anatomy.mask_hash and new.voxels[2] == 0 and not new.valid[2]

    # another grouping: every sidecar is recomputed
    g2 = AnatomyGroups(GROUPS.classes, {"lung": ("lobe",), "heart": ("heart", "aorta")})
    s4 = extract_features(items, enc, store, show_progress=False, masks=tmp_path / "masks", groups=g2)
    assert sorted(s4.anatomy_written) == ["a_1", "b_1"]
    assert store.read("b_1").anatomy.names == ["lung", "heart"]


def test_find_mask_layouts(tmp_path):
    (tmp_path / "cohort" / "dataset" / "train").mkdir(parents=True)
    (tmp_path / "cohort" / "masks").mkdir()
    vol = tmp_path / "cohort" / "dataset" / "train" / "x_1.nii.gz"
    vol.write_bytes(b"")
    assert find_mask("auto", "x_1", vol) is None
    (tmp_path / "cohort" / "masks" / "x_1.nii.gz").write_bytes(b"")
    assert find_mask("auto", "x_1", vol) == (tmp_path / "cohort" / "masks" / "x_1.nii.gz").resolve()
    seg = tmp_path / "seg"
    (seg / "x_1").mkdir(parents=True)  # TotalSegmentator's per-class folder named by key
    assert find_mask(seg, "x_1", vol) == seg / "x_1"
    with pytest.raises(RadfinderError):
        find_mask(tmp_path / "missing", "x_1", vol)


def test_masks_need_a_cache_with_spatial_tokens(tmp_path):
    spec = PreprocessSpec(name="t", spacing=(1.0, 1.0, 1.0), window=(32, 32, 8), depth_tokens_per_window=2)
    store = FeatureStore(tmp_path / "feat", spec, {"hash": "enc0"}, 6, spatial=False)
    with pytest.raises(RadfinderError, match="spatial tokens"):
        extract_features([], _Enc(), store, show_progress=False, masks="auto")
