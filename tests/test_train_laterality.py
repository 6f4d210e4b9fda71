"""A left-right flip never pairs a mirrored volume with text naming the original side (issue 15 point 1)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from radfinder.features.store import FeatureRecord
from radfinder.text.laterality import swap_laterality
from radfinder.train.batches import make_micro_batch
from radfinder.train.data import build_sources
from radfinder.train.toy import make_toy_cohort, toy_train_config


@pytest.mark.parametrize("text, mirrored", [
    ("Nodule in the left lower lobe; right-sided effusion.", "Nodule in the right lower lobe; left-sided effusion."),
    ("LEFT hilum. Right apex. Leftward shift.", "RIGHT hilum. Left apex. Rightward shift."),
    ("Bright lungs, no cleft.", "Bright lungs, no cleft."),  # words that only contain the letters stay
    ("Herd im linken Unterlappen, rechtsseitiger Erguss.", "Herd im rechten Unterlappen, linksseitiger Erguss."),
    ("Links betont; die rechte Niere, linken Hauptbronchus.", "Rechts betont; die linke Niere, rechten Hauptbronchus."),
])
def test_swap_laterality_en_and_de(text, mirrored):
    assert swap_laterality(text) == mirrored
    assert swap_laterality(mirrored) == text


class _Provider:
    """Returns tiny features, marking every sample as mirrored left-right (what RawFeatures does on a flip)."""

    def __init__(self, mirrored: bool):
        self.mirrored = mirrored

    def get(self, source, record, sample_index):
        rng = np.random.default_rng(sample_index)
        fr = FeatureRecord(record.key, rng.standard_normal((1, 1, 1, 12)).astype(np.float32),
                           rng.standard_normal((1, 1, 1, 12)).astype(np.float32),
                           rng.standard_normal((1, 1, 1, 8, 12)).astype(np.float32), np.eye(4),
                           meta={"mirrored_lr": self.mirrored})
        return fr, lambda cell: cell % 8


def test_mirrored_samples_get_swapped_reports_and_snippets(tmp_path):
    cohort = make_toy_cohort(tmp_path / "toy", 8, seed=5, text_tower=False)
    cfg = toy_train_config({**cohort, "model_overrides": {}})
    src = build_sources(cfg.data.datasets)
    withs = [i for i, r in enumerate(src[0].records) if src[0].snippets.get(r.key)]
    items = [(0, i, i) for i in withs]
    kw = dict(seed=0, n_questions=18, n_variants=1, max_snippets=10)
    plain, _ = make_micro_batch(items, src, _Provider(False), **kw)
    flipped, _ = make_micro_batch(items, src, _Provider(True), **kw)
    assert plain.snippet_texts and all(("left" in t) != ("right" in t) for t in plain.snippet_texts)
    assert flipped.snippet_texts == [swap_laterality(t) for t in plain.snippet_texts]
    assert flipped.snippet_texts != plain.snippet_texts
    assert flipped.texts == [swap_laterality(t) for t in plain.texts]


class _Encoder(torch.nn.Module):
    window_size = (128, 128, 32)

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        n = x.shape[0]
        out = SimpleNamespace(cls=torch.zeros(n, 4), patch_average=torch.zeros(n, 4), axis2=torch.zeros(n, 8, 4))
        out.to = lambda dtype: out
        return out


@pytest.mark.parametrize("flip_prob, mirrored", [(1.0, True), (0.0, False)])
def test_raw_features_mark_a_flip_of_the_left_right_axis(flip_prob, mirrored):
    from radfinder.preprocess.spec import PreprocessSpec
    from radfinder.train.config import AugmentSection
    from radfinder.train.raw import RawFeatures

    model = SimpleNamespace(backbone_image=_Encoder(), preprocess_spec=PreprocessSpec())
    raw = RawFeatures([], model, AugmentSection(flip_prob=flip_prob, crop_windows=(1, 1, 1)), 0,
                      torch.device("cpu"), None)
    assert raw.lr_axis == 0  # RAS: axis 0 runs left-right, the one whose flip mirrors the patient
    raw._preprocessed = lambda record: SimpleNamespace(image=np.zeros((128, 128, 32), np.float32), affine=np.eye(4))
    fr, _ = raw.get(0, SimpleNamespace(key="s_1"), 0)
    assert fr.meta["mirrored_lr"] is mirrored
