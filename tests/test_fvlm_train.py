"""The fvlm objective through the registry-driven trainer: a toy cohort with spatial tokens and anatomy coverage,
the loss going down, per-anatomy log keys, a combined RadFinder + fVLM run, and the trained head in the checkpoint
scoring the anatomy-level zero-shot task."""

from __future__ import annotations

import json

import pytest
import torch

from radfinder.data.manifest import load_manifest
from radfinder.errors import ConfigError
from radfinder.eval.anatomy_embed import run_anatomy_zero_shot
from radfinder.eval.evaluate import run_tasks
from radfinder.eval.registry import TaskContext, get_task
from radfinder.eval.tasks import TaskResults
from radfinder.features import FeatureStore
from radfinder.losses import get_objective
from radfinder.models.pretrained import from_pretrained
from radfinder.train.checkpoint import latest_checkpoint
from radfinder.train.toy import make_toy_cohort, toy_train_config
from radfinder.train.trainer import Trainer, train

ANATOMY = {"dim": 16, "num_heads": 2}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    torch.set_num_threads(1)
    return make_toy_cohort(tmp_path_factory.mktemp("toy"), 24, seed=5, anatomy=True)


def _cfg(cohort, steps, weights, **over):
    model = {"init": "tiny", "overrides": cohort["model_overrides"], "anatomy": ANATOMY}
    return toy_train_config(cohort, model=model, batch={"micro": 4, "accum": 2},
                            optim={"lr": 3e-3, "warmup_steps": 1}, schedule={"epochs": 30, "max_steps": steps},
                            losses={"b_init": -2.0, "weights": weights}, checkpoint={"every_steps": 1000}, **over)


def _log(run) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_fvlm_trains_logs_per_anatomy_and_saves_its_head(cohort, tmp_path, monkeypatch):
    assert get_objective("fvlm").batch_fields == ("anatomy",)
    res = train(_cfg(cohort, 14, {"fvlm": 1.0}), tmp_path / "run")
    lines = _log(tmp_path / "run")
    assert res.steps == 14 and all("siglip" not in x for x in lines)
    assert {"fvlm", "fvlm/lung", "fvlm/heart", "fvlm/esophagus", "fvlm/aorta"} <= set(lines[0])
    for x in lines:
        parts = sum(x[f"fvlm/{a}"] for a in ("lung", "heart", "esophagus", "aorta"))
        assert x["fvlm"] == pytest.approx(parts) and x["loss"] == pytest.approx(x["fvlm"])
    fv = [x["fvlm"] for x in lines]
    assert sum(fv[-3:]) / 3 < sum(fv[:3]) / 3 - 0.1, fv

    model = from_pretrained(latest_checkpoint(tmp_path / "run") / "model")
    assert model.anatomy_head is not None and model.config.anatomy.names == ["lung", "heart", "esophagus", "aorta"]
    records = load_manifest(cohort["manifest"], split="train")
    result, counts = run_anatomy_zero_shot(model, records, cohort["features"], n_boot=0)
    # the toy cohort cuts the aorta now and then: scored from its tokens all the same, and left out of `uncut`
    assert counts["scans"] == 24 and counts["valid_scans"] == {a: 24 for a in ("lung", "heart", "esophagus", "aorta")}
    assert 0 < counts["cut_scans"]["aorta"] < 24 and counts["cut_scans"]["lung"] == 0
    n_aortic = result.classification.findings["Arterial wall calcification"].n
    assert result.uncut.findings["Arterial wall calcification"].n < n_aortic
    assert result.uncut.findings["Emphysema"].n == result.classification.findings["Emphysema"].n
    assert 0.0 <= result.macro_auroc <= 1.0  # a smoke check on training data, not an evaluation
    # the registered evaluation task gives the same numbers (the toy cache is not from the model's own encoder)
    monkeypatch.setattr("radfinder.eval.evaluate.open_matching_store", lambda path, model: FeatureStore.open(path))
    res, _ = run_tasks(model, records, ["anatomy_zero_shot"], features=cohort["features"], n_boot=0)
    got = res.extra["anatomy-zero-shot"]
    assert got["macro_auroc"] == pytest.approx(result.macro_auroc) and got["valid_scans"] == counts["valid_scans"]
    assert got["uncut"]["macro_auroc"] == pytest.approx(result.uncut.macro_auroc)
    ctx = TaskContext(model, records, None, None, TaskResults())  # no feature cache given
    assert get_task("fvlm-zero-shot").run(ctx) is None and "anatomy-zero-shot" in ctx.results.skipped


def test_radfinder_and_fvlm_combine_by_weights(cohort, tmp_path):
    train(_cfg(cohort, 2, {"siglip": 1.0, "prompt": 8.0, "fvlm": 0.5}), tmp_path / "run")
    for x in _log(tmp_path / "run"):
        assert x["loss"] == pytest.approx(x["siglip"] + 8.0 * x["prompt"] + 0.5 * x["fvlm"])


def test_fvlm_needs_an_anatomy_head_and_anatomy_features(cohort, tmp_path):
    cfg = _cfg(cohort, 1, {"fvlm": 1.0})
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"anatomy": None})})
    with pytest.raises(ConfigError, match="anatomy head"):
        Trainer(cfg, tmp_path / "nohead").run()
    plain = make_toy_cohort(tmp_path / "plain", 8, seed=1)  # features without spatial tokens
    with pytest.raises(ConfigError, match="spatial tokens"):
        Trainer(_cfg(plain, 1, {"fvlm": 1.0}), tmp_path / "nospatial").run()


def test_configs_train_fvlm_demo_yaml_is_the_demo_fvlm_run():
    """configs/train/fvlm-demo.yaml trains what `radfinder.demo.fvlm.train_fvlm` trains."""
    from pathlib import Path

    from radfinder.demo.config import DemoSettings
    from radfinder.demo.fvlm import fvlm_dirs, fvlm_train_config_dict
    from radfinder.train.config import TrainConfig, load_train_config

    repo = Path(__file__).resolve().parents[1]
    out = repo / "demo-out"
    s = DemoSettings()
    enc_dir, feat_dir = fvlm_dirs(out, s)
    yaml_cfg = load_train_config(repo / "configs" / "train" / "fvlm-demo.yaml")
    demo_cfg = TrainConfig.model_validate(
        fvlm_train_config_dict(s, out, enc_dir.with_name(enc_dir.name + "-standardized"), feat_dir))
    a, b = yaml_cfg.model_dump(mode="json"), demo_cfg.model_dump(mode="json")
    for key in ("seed", "precision", "losses", "optim", "batch", "schedule", "device", "model"):
        assert a[key] == b[key], key
    keys = ("root", "features", "pairs", "labels_csv", "split", "mode")
    assert {k: a["data"]["datasets"][0][k] for k in keys} == {k: b["data"]["datasets"][0][k] for k in keys}
    ctrate = load_train_config(repo / "configs" / "train" / "fvlm-ctrate.yaml")
    assert ctrate.losses.weights.root == {"fvlm": 1.0} and ctrate.model.anatomy.exclude_cut
