"""Fast checks of the demo's pieces: depth-cell placement, encoder pre-training targets, the summary keys."""

from __future__ import annotations

import pytest

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

    calls = []

    def fake(name):
        def run(out, settings, log):
            calls.append(name)
            return {"stage": name}

        return run

    names = ["a", "b", "c"]
    monkeypatch.setattr(pipeline, "STAGES", [(n, fake(n)) for n in names])
    monkeypatch.setattr(pipeline, "STAGE_NAMES", names)
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
