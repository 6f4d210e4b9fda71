"""Feature extraction end to end on a scan whose window grid is not square: every stored cell holds the encoder's
output for the window at that cell's voxels (sliced here by hand, not through `Preprocessed.windows`), and the cache
keys of `items_from_paths`."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from radfinder.errors import RadfinderError
from radfinder.features import FeatureStore, extract_features
from radfinder.features.extract import ExtractItem, encode_windows, items_from_paths
from radfinder.io import load_volume
from radfinder.models.histogram import HistogramWindowEncoder
from radfinder.preprocess import apply_spec, resolve_spec


def test_each_stored_cell_is_the_encoding_of_the_window_at_its_voxels(tmp_path):
    # 1.5 x 1.5 x 3 mm source; the spec resamples to 0.75 x 0.75 x 3 mm and 128 x 128 x 32 windows, so
    # 195 x 105 x 240 mm gives a 2 x 1 x 2 grid: H, W and D cells all differ, a swapped axis cannot pass
    rng = np.random.default_rng(7)
    arr = rng.integers(-1000, 1500, (130, 70, 80)).astype(np.int16)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(arr, np.diag([1.5, 1.5, 3.0, 1.0])), str(path))
    spec = resolve_spec("radfinder")
    enc = HistogramWindowEncoder()
    store = FeatureStore(tmp_path / "cache", spec, {"name": "hist", "hash": "h"}, enc.feature_dim)
    summary = extract_features([ExtractItem("scan", str(path))], enc, store, batch_size=2, shard=(0, 1),
                               show_progress=False, prefetch_depth=0)  # fmt: skip
    assert summary.written == ["scan"] and not summary.failed

    pre = apply_spec(load_volume(str(path)), spec)
    hg, wg, dg = pre.grid
    assert (hg, wg, dg) == (2, 1, 2)
    wh, ww, wd = spec.window
    rec = store.read("scan")
    assert rec.cls.shape[:3] == (hg, wg, dg) and rec.axis2.shape[:4] == (hg, wg, dg, spec.depth_tokens_per_window)
    for h in range(hg):
        for w in range(wg):
            for d in range(dg):
                win = pre.image[h * wh:(h + 1) * wh, w * ww:(w + 1) * ww, d * wd:(d + 1) * wd][None, None]
                cls, avg, axis2 = encode_windows(enc, np.ascontiguousarray(win), batch_size=1,
                                                 device=torch.device("cpu"))[:3]  # fmt: skip
                # the cache stores float16
                np.testing.assert_allclose(rec.cls[h, w, d], cls[0], rtol=1e-2, atol=1e-3)
                np.testing.assert_allclose(rec.patch_average[h, w, d], avg[0], rtol=1e-2, atol=1e-3)
                np.testing.assert_allclose(rec.axis2[h, w, d], axis2[0], rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(rec.affine, pre.affine)
    assert rec.meta["source_shape"] == [130, 70, 80]


def test_items_are_keyed_by_file_name_without_the_image_extension_and_collisions_are_refused(tmp_path):
    items = items_from_paths(["a/ct1.nii.gz", "b/ct2.nii", "ct3.nrrd", "x/ct4.npz", "dicom/ct5", "ct6.nii.gz.bak"])
    assert [it.key for it in items] == ["ct1", "ct2", "ct3", "ct4", "ct5", "ct6.nii.gz.bak"]
    assert items[0].path == "a/ct1.nii.gz"
    # seven colliding keys: the message names the first five (sorted) and no more, so it stays one readable line
    paths = [f"{d}/k{i}.nii.gz" for i in range(7) for d in ("one", "two")]
    with pytest.raises(RadfinderError, match="same cache key") as err:
        items_from_paths(paths)
    named = [f"k{i}" for i in range(7) if f"k{i}" in str(err.value)]
    assert named == ["k0", "k1", "k2", "k3", "k4"]
