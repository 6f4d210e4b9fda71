"""Contracts between stages (issue 15 point 1): pairs carry the spec they were mined for and are refused on another
grid; dropped pairs are counted, never thrown away silently; the depth-token count must match the spec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from radfinder.data.pairs import read_pairs
from radfinder.data.records import DatasetError
from radfinder.errors import ConfigError
from radfinder.eval.embed import EvalSetupError, check_depth_tokens
from radfinder.features.extract import DepthTokenMismatch, ExtractItem, extract_features
from radfinder.features.store import FeatureRecord, FeatureStore
from radfinder.io.volume import Volume
from radfinder.preprocess.spec import PreprocessSpec, resolve_spec
from radfinder.train.batches import CachedFeatures
from radfinder.train.config import LossSection
from radfinder.train.data import build_sources
from radfinder.train.toy import TOY_BACKBONE, make_toy_cohort, toy_train_config
from radfinder.train.trainer import train


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_toy_cohort(tmp_path_factory.mktemp("toy"), 16, seed=3)


def _rewrite_pairs(src: str, dst, fn) -> str:
    rows = [json.loads(x) for x in open(src).read().splitlines() if x.strip()]
    rows = fn(rows)
    dst.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(dst)


def test_pairs_record_their_spec_and_another_spec_is_refused(cohort, tmp_path):
    own = resolve_spec(None).hash()
    assert read_pairs(cohort["pairs"], spec_hash=own).spec_hash == own
    other = PreprocessSpec(spacing=(1.0, 1.0, 2.0)).hash()
    assert other != own
    with pytest.raises(DatasetError, match=f"mined for preprocessing spec {own}.*has spec {other}"):
        read_pairs(cohort["pairs"], spec_hash=other, what="the model")
    # training refuses pairs mined for another spec than the feature cache's
    bad = _rewrite_pairs(cohort["pairs"], tmp_path / "pairs.jsonl",
                         lambda rows: [{**r, "spec_hash": "f" * 16} for r in rows])
    cfg = toy_train_config(cohort)
    section = cfg.data.datasets[0].model_copy(update={"pairs": bad})
    with pytest.raises(DatasetError, match="feature cache"):
        build_sources([section])


def test_dropped_pairs_are_counted_in_the_training_log(cohort, tmp_path):
    def add_bad(rows):
        return rows + [
            {"key": "toy_0000", "snippet": "beyond the last cell", "depth_cell": 10_000, "split": "train"},
            {"key": "toy_9999", "snippet": "a scan that is not there", "depth_cell": 1, "split": "train"},
            {"key": "valid_0001", "snippet": "another split", "depth_cell": 1, "split": "valid"},
        ]

    pairs = _rewrite_pairs(cohort["pairs"], tmp_path / "pairs.jsonl", add_bad)
    cfg = toy_train_config(cohort, batch={"micro": 4, "accum": 2}, schedule={"epochs": 1})
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={
        "max_snippets_per_scan": 50,
        "datasets": [cfg.data.datasets[0].model_copy(update={"pairs": pairs})]})})
    res = train(cfg, tmp_path / "run", show_progress=False)
    counts = res.pairs["datasets"]["toy"]
    assert counts["missing_scan"] == 1 and counts["other_split"] == 1
    assert counts["kept"] == cohort["n_pairs"] + 1 and counts["read"] == cohort["n_pairs"] + 3
    log = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert sum(x["snippets_dropped"] for x in log) == 1  # one epoch draws every scan once: toy_0000's bad cell
    saved = json.loads((tmp_path / "run/data.json").read_text())["pairs"]
    assert saved["datasets"]["toy"] == counts and saved["dropped_cell_outside_grid"] == 1


def _record(key: str, tokens: int, dim: int = 12) -> FeatureRecord:
    rng = np.random.default_rng(0)
    return FeatureRecord(key, rng.standard_normal((1, 1, 2, dim)).astype(np.float32),
                         rng.standard_normal((1, 1, 2, dim)).astype(np.float32),
                         rng.standard_normal((1, 1, 2, tokens, dim)).astype(np.float32), np.eye(4))


def test_depth_token_count_is_checked_in_training_and_evaluation(cohort, tmp_path):
    spec = resolve_spec(None)
    store = FeatureStore(tmp_path / "features", spec, TOY_BACKBONE, 12)
    store.write(_record("toy_0000", spec.depth_tokens_per_window // 4))
    cfg = toy_train_config(cohort)
    section = cfg.data.datasets[0].model_copy(update={"features": str(store.root), "pairs": None})
    sources = build_sources([section])
    sources[0].records = [r for r in sources[0].records if r.key == "toy_0000"]
    provider = CachedFeatures(sources, 12)
    with pytest.raises(ConfigError, match="depth tokens per window"):
        provider.get(0, sources[0].records[0], 0)
    with pytest.raises(EvalSetupError, match="depth tokens per window"):
        check_depth_tokens(store.read("toy_0000"), spec, str(store.root))
    check_depth_tokens(_record("ok", spec.depth_tokens_per_window), spec, "here")  # the spec's count passes


class _CoarseEncoder:
    """Two depth positions per window, like a ResNet whose feature map is 16x coarser in depth."""

    def __call__(self, windows: torch.Tensor):
        n = windows.shape[0]
        out = type("Out", (), {})()
        out.cls = torch.zeros(n, 12)
        out.patch_average = torch.zeros(n, 12)
        out.axis2 = torch.zeros(n, 2, 12)
        return out


def test_depth_token_count_is_checked_in_feature_extraction(tmp_path):
    spec = resolve_spec(None)
    store = FeatureStore(tmp_path / "features", spec, {"name": "coarse", "hash": "coarse"}, 12)
    vol = Volume(np.zeros((40, 40, 20), np.int16), np.diag([4.0, 4.0, 6.0, 1.0]), {})
    item = ExtractItem(key="v_1", path=tmp_path / "v_1.nii.gz")
    with pytest.raises(DepthTokenMismatch, match="2 depth tokens per window"):
        extract_features([item], _CoarseEncoder(), store, show_progress=False, load_fn=lambda it: vol)
    assert "v_1" not in store


def test_fine_tuning_keeps_the_learned_siglip_scale_and_bias_and_saves_the_temperature(cohort, tmp_path):
    from radfinder.models.pretrained import from_pretrained
    from radfinder.train.trainer import Trainer

    first = toy_train_config(cohort, schedule={"epochs": 1, "max_steps": 2}, optim={"lr": 0.05, "warmup_steps": 0},
                             losses={"b_init": -2.0, "localization_tau": 0.05})
    res = train(first, tmp_path / "first", show_progress=False)
    saved = from_pretrained(res.last_checkpoint / "model")
    t, b = float(saved.criterion.t.detach()), float(saved.criterion.b.detach())
    assert abs(t - np.log(10.0)) > 1e-4 and abs(b + 2.0) > 1e-4, "the first run did not move t and b"
    assert saved.config.localization_tau == 0.05  # the temperature trained with is saved with the model

    tune = toy_train_config(cohort)
    tune = tune.model_copy(update={"losses": LossSection(), "model": tune.model.model_copy(
        update={"init": str(res.last_checkpoint / "model"), "overrides": {}})})
    tr = Trainer(tune, tmp_path / "tune", show_progress=False)
    assert float(tr.model.criterion.t.detach()) == pytest.approx(t)
    assert float(tr.model.criterion.b.detach()) == pytest.approx(b)
    assert tr.settings.tau == 0.05 and tr.model.config.localization_tau == 0.05
    asked = tune.model_copy(update={"losses": tune.losses.model_copy(update={"t_init": 1.0, "localization_tau": 0.2})})
    tr2 = Trainer(asked, tmp_path / "tune2", show_progress=False)
    assert float(tr2.model.criterion.t.detach()) == 1.0 and float(tr2.model.criterion.b.detach()) == pytest.approx(b)
    assert tr2.settings.tau == 0.2 and tr2.model.config.localization_tau == 0.2
