"""Cache entries: lossless round trip, keys (spec hash, source identity), atomicity and corruption detection."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from radfinder.errors import VolumeReadError
from radfinder.io.volume import Volume
from radfinder.preprocess import (
    PreprocessedCache,
    PreprocessSpec,
    apply_spec,
    entry_path,
    load_preprocessed,
    read_header,
    save_preprocessed,
    source_identity,
)

SPEC = PreprocessSpec(window=(16, 16, 8), depth_tokens_per_window=2)


def _nifti(path, seed=0, shape=(20, 18, 10)):
    rng = np.random.default_rng(seed)
    arr = rng.integers(-1024, 1500, size=shape).astype(np.int16)
    nib.save(nib.Nifti1Image(arr, np.diag([-1.1, -1.2, 2.5, 1.0])), str(path))
    return path


def test_round_trip_is_lossless_and_carries_the_spec(tmp_path):
    vol = Volume(np.random.default_rng(1).integers(-1000, 1000, (30, 20, 12)).astype(np.int16), np.diag([1, 1, 2, 1]))
    pre = apply_spec(vol, SPEC)
    path = save_preprocessed(tmp_path / "a.rfpre", pre, {"source": "x"})
    back = load_preprocessed(path, expect_spec=SPEC)
    assert back.image.dtype == np.float16
    np.testing.assert_array_equal(back.image.view(np.uint16), pre.image.view(np.uint16))
    np.testing.assert_array_equal(back.affine, pre.affine)
    assert back.grid == pre.grid and back.crop_start == pre.crop_start and back.spaced_shape == pre.spaced_shape
    assert back.spec == SPEC and back.spec_hash == SPEC.hash()
    np.testing.assert_array_equal(back.windows(), pre.windows())
    assert read_header(path)["source"] == "x"
    with pytest.raises(VolumeReadError, match="spec"):
        load_preprocessed(path, expect_spec=PreprocessSpec())
    # float32 specs are stored too
    pre32 = apply_spec(vol, SPEC.model_copy(update={"dtype": "float32"}))
    np.testing.assert_array_equal(load_preprocessed(save_preprocessed(tmp_path / "b.rfpre", pre32)).image, pre32.image)


def test_corrupt_or_truncated_entries_are_detected(tmp_path):
    pre = apply_spec(Volume(np.zeros((16, 16, 8), np.int16) + 40, np.eye(4)), SPEC)
    path = save_preprocessed(tmp_path / "a.rfpre", pre)
    data = path.read_bytes()
    (tmp_path / "trunc.rfpre").write_bytes(data[:-10])
    flipped = bytearray(data)
    flipped[-20] ^= 0xFF
    (tmp_path / "flip.rfpre").write_bytes(bytes(flipped))
    (tmp_path / "junk.rfpre").write_bytes(b"hello world, not an entry")
    for name in ("trunc", "flip", "junk"):
        with pytest.raises(VolumeReadError, match=name):
            load_preprocessed(tmp_path / f"{name}.rfpre")


def test_key_contains_spec_hash_and_source_identity(tmp_path):
    src = _nifti(tmp_path / "ct.nii.gz")
    p1 = entry_path(tmp_path / "cache", src, SPEC)
    assert p1.parent.name == SPEC.hash() and p1.name.startswith("ct-") and p1.suffix == ".rfpre"
    other_spec = SPEC.model_copy(update={"hu_window": (-1000.0, 400.0)})
    assert entry_path(tmp_path / "cache", src, other_spec).name != p1.name
    assert entry_path(tmp_path / "cache", src, SPEC, series="2").name != p1.name
    # touching the file (new mtime) changes the key; the content hash does not care
    h1 = source_identity(src, content_hash=True)
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert entry_path(tmp_path / "cache", src, SPEC).name != p1.name
    copy = tmp_path / "copy.nii.gz"
    copy.write_bytes(src.read_bytes())
    assert source_identity(copy, content_hash=True)["sha256"] != h1["sha256"]  # the name is part of it
    sub = tmp_path / "moved"
    sub.mkdir()
    (sub / "ct.nii.gz").write_bytes(src.read_bytes())
    assert source_identity(sub / "ct.nii.gz", content_hash=True) == h1


def test_cache_get_or_compute(tmp_path):
    src = _nifti(tmp_path / "ct.nii.gz", seed=4)
    cache = PreprocessedCache(tmp_path / "cache", SPEC)
    assert cache.get(src) is None
    first = cache.get_or_compute(src)
    path = cache.path_for(src)
    assert path.is_file() and not list(path.parent.glob(".*.tmp"))
    mtime = path.stat().st_mtime_ns
    again = cache.get_or_compute(src)
    assert path.stat().st_mtime_ns == mtime  # loaded, not recomputed
    np.testing.assert_array_equal(again.image, first.image)
