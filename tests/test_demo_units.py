"""Fast checks of the demo's pieces: depth-cell placement, encoder pre-training targets, the summary keys."""

from __future__ import annotations

import pytest

from helpers_demo import fake_stages
from radfinder.demo.summary import format_table, markdown_table, summarize
from radfinder.errors import ConfigError


def test_summary_has_the_headline_keys():
    metrics = {
        "retrieval": {"text_to_volume": {"n_queries": 50, "n_gallery": 50, "recall": {"R@1": 0.1, "R@10": 0.5},
                                         "chance": {"R@1": 0.02, "R@10": 0.2}, "median_rank": 10.0,
                                         "mean_rank": 14.0, "ci": {}},
                      "volume_to_text": {"recall": {"R@10": 0.4}, "median_rank": 12.0}},
        "classification": {"zero-shot (mean7)": {"macro_auroc": 0.9, "n_findings": 17, "n_cases": 50,
                                                 "per_finding": {"Lung nodule": {"auroc": 0.8}}}},
        "localization": {"n_snippets": 40, "model": {"mae_mm": 20.0, "acc_within_12mm": 0.5},
                         "middle": {"mae_mm": 70.0}, "random_expected": {"mae_mm": 110.0}},
        "report": {"html": "x/report.html"},
    }  # fmt: skip
    s = summarize(metrics)
    assert s["retrieval"]["R@10"] == 0.5 and s["retrieval"]["chance_R@10"] == 0.2
    assert s["zero_shot"]["macro_auroc"] == 0.9
    assert s["zero_shot"]["per_finding_auroc"] == {"Lung nodule": 0.8}
    assert s["localization"]["mae_mm"] == 20.0
    assert s["localization"]["baseline_middle_mae_mm"] == 70.0
    assert s["localization"]["baseline_random_mae_mm"] == 110.0
    assert "50.0%" in format_table(s) and markdown_table(s).startswith("| metric")


def test_a_rerun_stage_invalidates_every_later_stage(tmp_path, monkeypatch):
    """`--redo X --stop-after X` must not leave later stages marked done on the old outputs."""
    from radfinder.demo import pipeline

    calls = fake_stages(monkeypatch, ["a", "b", "c"])
    log = lambda msg: None  # noqa: E731
    pipeline.run_demo(tmp_path, log=log)
    assert calls == ["a", "b", "c"]
    pipeline.run_demo(tmp_path, redo=["b"], stop_after="b", log=log)
    assert calls[3:] == ["b"]
    assert not (tmp_path / "stages" / "c.json").exists()
    pipeline.run_demo(tmp_path, log=log)  # resumes: a and b done, c runs again on b's new outputs
    assert calls[4:] == ["c"]


def test_an_unknown_encoder_is_refused_before_any_stage_runs(tmp_path):
    from radfinder.demo import DemoSettings, run_demo

    with pytest.raises(ConfigError, match="encoder must be one of pretrained-synthetic, histogram"):
        run_demo(tmp_path / "d", DemoSettings(encoder="spectre"), log=lambda m: None)
    assert not (tmp_path / "d").exists()


def test_configs_train_demo_yaml_is_the_demo_training_run():
    """configs/train/demo.yaml trains what `radfinder demo` trains (after --stop-after features)."""
    from pathlib import Path

    from radfinder.demo.config import DemoSettings, train_config_dict
    from radfinder.train.config import TrainConfig, load_train_config

    repo = Path(__file__).resolve().parents[1]
    out = repo / "demo-out"
    yaml_cfg = load_train_config(repo / "configs" / "train" / "demo.yaml")
    s = DemoSettings()
    demo_cfg = TrainConfig.model_validate(train_config_dict(s, out, out / "encoder-standardized"))
    a, b = yaml_cfg.model_dump(mode="json"), demo_cfg.model_dump(mode="json")
    for key in ("seed", "precision", "losses", "optim", "batch", "schedule", "device"):
        assert a[key] == b[key], key
    assert a["model"]["init"] == b["model"]["init"] and a["model"]["text_train"] == b["model"]["text_train"]
    da, db = a["data"]["datasets"][0], b["data"]["datasets"][0]
    assert {k: da[k] for k in ("root", "features", "pairs", "labels_csv", "split", "mode")} == {
        k: db[k] for k in ("root", "features", "pairs", "labels_csv", "split", "mode")
    }
    assert a["data"]["max_snippets_per_scan"] == b["data"]["max_snippets_per_scan"]


def test_a_small_demo_shrinks_the_batch_to_its_train_split(tmp_path):
    from radfinder.demo.config import DemoSettings, train_config_dict

    cfg = train_config_dict(DemoSettings(studies=40), tmp_path, tmp_path / "init", n_train=27)
    assert cfg["batch"]["micro"] == 27
    assert train_config_dict(DemoSettings(), tmp_path, tmp_path / "init", n_train=140)["batch"]["micro"] == 32


def test_changing_only_n_boot_reruns_the_evaluation_alone(tmp_path, monkeypatch):
    from radfinder.demo import pipeline
    from radfinder.demo.config import DemoSettings

    calls = fake_stages(monkeypatch, ["cohort", "train", "evaluate"])
    log = lambda msg: None  # noqa: E731
    pipeline.run_demo(tmp_path, DemoSettings(n_boot=10), log=log)
    pipeline.run_demo(tmp_path, DemoSettings(n_boot=50), log=log)
    assert calls == ["cohort", "train", "evaluate", "evaluate"]
    pipeline.run_demo(tmp_path, DemoSettings(n_boot=50, device="cpu", progress=False), log=log)  # execution only
    assert calls[4:] == []
    with pytest.raises(ConfigError, match="other settings \\(seed\\)"):
        pipeline.run_demo(tmp_path, DemoSettings(n_boot=50, seed=1), log=log)


def test_the_cli_and_the_settings_share_the_default_cohort_size():
    import inspect

    from radfinder.cli.demo_cmds import demo
    from radfinder.demo.config import DemoSettings

    option = inspect.signature(demo).parameters["studies"].default
    assert option.default == DemoSettings().studies == DemoSettings.studies


def test_the_default_cohort_gives_every_seed_at_least_120_valid_scans():
    """The demo's held-out split is drawn per patient (valid with probability valid_fraction): counted with the
    cohort planner itself (cheap: no volume is rendered) for seeds 0..9."""
    from radfinder.data.synth.cohort import plan_cohort
    from radfinder.demo.config import DemoSettings

    s = DemoSettings()
    for seed in range(10):
        plans = plan_cohort(s.studies, seed, valid_fraction=s.valid_fraction, res="demo")
        assert len(plans) == s.studies
        n_valid = sum(p["split"] == "valid" for p in plans)
        assert n_valid >= 120, (seed, n_valid)
        assert {p["patient"] for p in plans if p["split"] == "valid"}.isdisjoint(
            p["patient"] for p in plans if p["split"] == "train")


@pytest.mark.parametrize("encoder", ["pretrained-synthetic", "random"])
def test_the_encoder_stage_saves_the_shipped_weights_or_the_seeded_control(tmp_path, encoder):
    """The saved model's window encoder holds exactly the shipped safetensors file (read here directly), the
    `random` control does not, and the stage's record names what was saved."""
    import torch
    from safetensors.torch import load_file

    from radfinder.demo.config import DemoSettings
    from radfinder.demo.stages import stage_encoder
    from radfinder.models.radfinder import RadFinderModel
    from radfinder.models.shipped import encoder_dir, read_card, sha256_of

    info = stage_encoder(tmp_path, DemoSettings(encoder=encoder), lambda *a, **k: None)
    model = RadFinderModel.from_pretrained(tmp_path / "encoder")
    shipped_file = encoder_dir("pretrained-synthetic") / "encoder.safetensors"
    shipped = load_file(str(shipped_file))
    got = model.backbone_image.state_dict()
    assert info["feature_dim"] == model.backbone_image.feature_dim and info["encoder"] == encoder
    assert info["pretrained"] is (encoder != "random")
    assert info["weights_sha256"] == read_card("pretrained-synthetic")["sha256"] == sha256_of(shipped_file)
    same = set(got) == set(shipped) and all(torch.equal(got[k].float(), shipped[k].float()) for k in shipped)
    assert same is (encoder != "random")
