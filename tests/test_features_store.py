from __future__ import annotations

import numpy as np
import pytest
import torch

from radfinder.features import FeatureCacheError, FeatureRecord, FeatureStore, select_shard, state_dict_hash
from radfinder.features.extract import ExtractItem, parse_shard
from radfinder.preprocess.spec import PreprocessSpec


def _record(key: str, grid=(2, 1, 3), e=6, t=8, seed=0) -> FeatureRecord:
    rng = np.random.default_rng(seed)
    return FeatureRecord(
        key=key,
        cls=rng.normal(size=(*grid, e)).astype(np.float32),
        patch_average=rng.normal(size=(*grid, e)).astype(np.float32),
        axis2=rng.normal(size=(*grid, t, e)).astype(np.float32),
        affine=np.diag([0.75, 0.75, 3.0, 1.0]),
        meta={"source": "x.nii.gz"},
    )


def test_roundtrip_keeps_float16_values_grid_and_affine(tmp_path):
    store = FeatureStore(tmp_path, PreprocessSpec(), {"name": "t", "hash": "abc"}, feature_dim=6)
    rec = _record("train_1_a_1")
    store.write(rec)
    back = FeatureStore.open(tmp_path).read("train_1_a_1")
    assert back.grid == (2, 1, 3) and back.n_depth_cells == 24
    np.testing.assert_array_equal(back.cls, rec.cls.astype(np.float16))
    np.testing.assert_array_equal(back.axis2, rec.axis2.astype(np.float16))
    np.testing.assert_array_equal(back.affine, rec.affine)
    assert back.meta == {"source": "x.nii.gz"}
    assert store.keys() == ["train_1_a_1"] and "train_1_a_1" in store


def test_cache_refuses_other_spec_or_backbone(tmp_path):
    FeatureStore(tmp_path, PreprocessSpec(), {"hash": "abc"}, feature_dim=6)
    with pytest.raises(FeatureCacheError, match="spec_hash"):
        FeatureStore(tmp_path, PreprocessSpec(spacing=(1.0, 1.0, 3.0)), {"hash": "abc"}, feature_dim=6)
    with pytest.raises(FeatureCacheError, match="backbone_hash"):
        FeatureStore(tmp_path, PreprocessSpec(), {"hash": "other"}, feature_dim=6)


def test_corrupt_entry_and_bad_shapes_are_clear_errors(tmp_path):
    store = FeatureStore(tmp_path, PreprocessSpec(), {"hash": "abc"}, feature_dim=6)
    store.write(_record("a"))
    store.path_of("a").write_bytes(b"not zstd")
    with pytest.raises(FeatureCacheError, match="unreadable"):
        store.read("a")
    bad = _record("b")
    bad.axis2 = bad.axis2[:, :, :2]
    with pytest.raises(FeatureCacheError, match="axis2"):
        store.write(bad)
    with pytest.raises(FeatureCacheError, match="letters"):
        store.path_of("../escape")


def test_no_temporary_files_left_and_interrupted_tmp_is_ignored(tmp_path):
    store = FeatureStore(tmp_path, PreprocessSpec(), {"hash": "abc"}, feature_dim=6)
    (tmp_path / ".c.rff.123.tmp").write_bytes(b"half")  # what a killed writer leaves
    store.write(_record("c"))
    assert store.keys() == ["c"]


def test_shards_partition_items_exactly_once():
    items = [ExtractItem(key=f"k{i:03d}", path=f"p{i}") for i in range(23)]
    parts = [select_shard(items, (r, 4)) for r in range(4)]
    keys = sorted(it.key for part in parts for it in part)
    assert keys == sorted(it.key for it in items)
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(Exception, match="0 <= i < n"):
        parse_shard("4/4")


def test_state_dict_hash_tracks_weights():
    a = torch.nn.Linear(3, 2)
    h = state_dict_hash(a)
    assert h == state_dict_hash(a)
    with torch.no_grad():
        a.weight[0, 0] += 1e-3
    assert state_dict_hash(a) != h


def test_collate_pads_to_largest_grid_with_mask():
    from radfinder.features import collate_features

    a, b = _record("a", grid=(2, 1, 3)), _record("b", grid=(1, 2, 1), seed=1)
    batch = collate_features([a, b])
    assert tuple(batch.cls.shape) == (2, 2, 2, 3, 6) and tuple(batch.axis2.shape) == (2, 2, 2, 3, 8, 6)
    assert batch.window_mask[0].sum() == 6 and batch.window_mask[1].sum() == 2
    assert batch.grid_size.tolist() == [[2, 1, 3], [1, 2, 1]]
    assert batch.depth_cells.tolist() == [24, 8]
    np.testing.assert_array_equal(batch.cls[1, :1, :2, :1].numpy(), b.cls)
    assert float(batch.cls[1, 1].abs().sum()) == 0.0


def test_feature_statistics_match_numpy_over_the_chosen_scans_only(tmp_path):
    from radfinder.features import feature_statistics

    store = FeatureStore(tmp_path, PreprocessSpec(), {"name": "t", "hash": "abc"}, feature_dim=6)
    recs = [_record(f"train_{i}_a_1", grid=(1, 2, i + 1), seed=i) for i in range(3)]
    for r in recs:
        r.cls = r.cls * 3 + 5  # a large common component, as a CNN's post-ReLU features have
        store.write(r)
    store.write(_record("valid_9_a_1", seed=9))  # must not enter the statistics
    stats = feature_statistics(store, [r.key for r in recs])
    for name in ("cls", "patch_average", "axis2"):
        ref = np.concatenate([getattr(store.read(r.key), name).reshape(-1, 6).astype(np.float64) for r in recs])
        np.testing.assert_allclose(stats[f"{name}_mean"].numpy(), ref.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats[f"{name}_std"].numpy(), ref.std(0), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        feature_statistics(store, [])
