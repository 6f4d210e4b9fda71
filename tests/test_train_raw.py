"""Raw-volume training: random crop on the window/depth-cell grid, flips, snippet depth remapping, one real step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from radfinder.train.raw import random_crop_flip, to_windows
from radfinder.train.toy import make_toy_cohort, toy_train_config
from radfinder.train.trainer import Trainer


def test_crop_offsets_stay_on_depth_cells_and_flip():
    image = np.arange(8 * 8 * 16, dtype=np.float32).reshape(8, 8, 16)
    for seed in range(20):
        crop, d0, flips = random_crop_flip(image, (4, 4, 4), 2, (1, 2, 2), 0.5, np.random.default_rng(seed))
        assert crop.shape == (4, 8, 8) and d0 % 2 == 0 and 0 <= d0 <= 8
        ref = image[:, :, d0 : d0 + 8]
        for axis, f in enumerate(flips):
            if f:
                ref = np.flip(ref, axis)
        assert any(np.array_equal(crop, ref[h : h + 4]) for h in range(5))
    w = to_windows(np.arange(8 * 4 * 8, dtype=np.float32).reshape(8, 4, 8), (4, 4, 4))
    assert w.shape == (4, 1, 4, 4, 4) and w[1, 0, 0, 0, 0] == 4  # D fastest: window (0, 0, 1) starts at d = 4


@pytest.mark.timeout(300)
def test_raw_training_step_runs_encoder_and_remaps_snippets(tmp_path):
    import nibabel as nib

    torch.set_num_threads(1)
    cohort = make_toy_cohort(tmp_path / "toy", 4, seed=2)
    rows = [json.loads(x) for x in (tmp_path / "toy/manifest.jsonl").read_text().splitlines()]
    rng = np.random.default_rng(0)
    for row in rows:  # 96 x 96 x 192 mm at 0.75 x 0.75 x 3 mm: one window in-plane, two along depth
        vol = (rng.normal(0, 300, (128, 128, 64))).astype(np.int16)
        path = tmp_path / "toy" / row["volume"]
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(vol, np.diag([0.75, 0.75, 3.0, 1.0])), str(path))
    (tmp_path / "toy/pairs.jsonl").write_text("".join(
        json.dumps({"key": r["id"], "snippet": "nodule in the left upper lobe", "depth_cell": 14}) + "\n"
        for r in rows))
    cfg = toy_train_config(cohort, batch={"micro": 2, "accum": 1}, schedule={"epochs": 1, "max_steps": 1})
    data = cfg.data.model_copy(update={"source": "raw", "augment": cfg.data.augment.model_copy(
        update={"crop_windows": (1, 1, 1), "flip_prob": 0.5})})
    tr = Trainer(cfg.model_copy(update={"data": data}), tmp_path / "run", show_progress=False)
    mbs = tr.micro_batches(0)
    assert tuple(mbs[0].grid_size[0].tolist()) == (1, 1, 1)
    for mb in mbs:  # cell 14 of 16 survives a crop at depth offset 8 (cell 6) or falls outside one at offset 0
        for j in range(mb.n_snippets):
            assert 0 <= int(mb.snippet_cell[j]) < 8
    stats = tr.compute_gradients(0)
    assert np.isfinite(stats.loss) and stats.n_samples == 2
