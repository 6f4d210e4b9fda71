"""`radfinder demo --methods`: method recipes, their parsing, the comparison table, and what a change re-runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_demo import fake_stages
from radfinder.demo.config import DEMO_TRAIN, DemoSettings
from radfinder.demo.methods import METHODS, comparison_markdown, parse_methods, resolve_method
from radfinder.errors import ConfigError
from radfinder.train.config import load_train_config

REPO = Path(__file__).resolve().parents[1]


def test_method_lists_are_checked():
    assert parse_methods("radfinder, fvlm,scale-vlp") == ["radfinder", "fvlm", "scale-vlp"]
    assert parse_methods("radfinder,radfinder+fvlm") == ["radfinder", "radfinder+fvlm"]
    with pytest.raises(ConfigError, match="unknown method.*clip.*known: radfinder"):
        parse_methods("radfinder,clip")
    with pytest.raises(ConfigError, match="must start with radfinder"):
        parse_methods("fvlm,radfinder")
    with pytest.raises(ConfigError, match="twice"):
        parse_methods("radfinder,fvlm,fvlm")
    with pytest.raises(ConfigError, match="names no method"):
        parse_methods(" , ")


def test_a_combined_method_trains_every_objective_and_is_scored_on_every_task():
    m = resolve_method("radfinder+fvlm")
    assert m.weights == {**DEMO_TRAIN["losses"]["weights"], "fvlm": 1.0}
    assert m.tasks == ("retrieval", "zero-shot", "localization", "anatomy_zero_shot")
    assert m.anatomy and m.snippets
    both = resolve_method("scale-vlp+radfinder")  # the first one's weight where both name an objective
    assert both.weights["prompt"] == METHODS["scale-vlp"].weights["prompt"] and "swca" in both.weights
    assert both.loss_section()["options"]["swca"]["beta"] == 0.5


@pytest.mark.parametrize(("method", "config"), [("radfinder", "demo.yaml"), ("scale-vlp", "scale-vlp-demo.yaml"),
                                                ("fvlm", "fvlm-demo.yaml")])
def test_demo_recipes_are_the_config_files(method, config):
    """The demo trains what configs/train/<config> trains (weights and loss options)."""
    losses = load_train_config(REPO / "configs" / "train" / config).losses
    section = METHODS[method].loss_section()
    assert sorted(losses.weights.active()) == sorted(k for k, v in section["weights"].items() if v)
    assert {k: losses.weights.get(k) for k in section["weights"]} == section["weights"]
    assert losses.options == section.get("options", {})
    assert losses.t_init == section.get("t_init")
    assert losses.b_init == section["b_init"]


def test_comparison_table_marks_tasks_a_method_lacks():
    table = comparison_markdown({
        "radfinder": {"retrieval": {"R@10": 0.27, "median_rank": 16.0}, "zero_shot": {"macro_auroc": 0.725},
                      "localization": {"mae_mm": 32.3}},
        "fvlm": {"anatomy_zero_shot": {"macro_auroc": 0.871}},
    })  # fmt: skip
    rows = table.splitlines()
    assert rows[0].startswith("| method | text-to-volume R@10")
    assert rows[2] == "| radfinder | 27.0% | 16.0 | 0.725 | - | 32.3 |"
    assert rows[3] == "| fvlm | - | - | - | 0.871 | - |"


def test_difference_table_and_references():
    from radfinder.demo.methods import delta_markdown, reference_of

    names = ["radfinder", "scale-vlp", "fvlm", "radfinder+fvlm"]
    assert [reference_of(n, names) for n in names] == [None, "radfinder", "radfinder+fvlm", "radfinder"]
    assert reference_of("fvlm", ["radfinder", "fvlm"]) is None  # nothing shared, no combination run
    table = delta_markdown({
        "radfinder": {"retrieval": {"R@10": 0.27}},
        "scale-vlp": {"delta_vs_radfinder": {
            "retrieval": {"R@10": {"difference": -0.05, "ci95": [-0.1, 0.01]}},
            "zero_shot": {"macro_auroc": {"difference": 0.0123, "ci95": [-0.02, 0.031]}}}},
        "fvlm": {"delta_vs_radfinder+fvlm": {"anatomy_zero_shot": {"macro_auroc": {"difference": -0.004,
                                                                                   "ci95": None}}}},
    })  # fmt: skip
    rows = table.splitlines()
    assert rows[2] == "| scale-vlp | radfinder | -5.0 pts [-10.0, +1.0] | - | +0.012 [-0.020, +0.031] | - | - |"
    assert rows[3] == "| fvlm | radfinder+fvlm | - | - | - | -0.004 | - |"
    assert delta_markdown({"radfinder": {}}) == ""


def test_changing_methods_reruns_the_comparison_only(tmp_path, monkeypatch):
    from radfinder.demo import pipeline

    calls = fake_stages(monkeypatch, ["cohort", "train", "evaluate", "methods"])
    log = lambda msg: None  # noqa: E731
    pipeline.run_demo(tmp_path, DemoSettings(), log=log)
    pipeline.run_demo(tmp_path, DemoSettings(methods="radfinder,fvlm"), log=log)
    assert calls == ["cohort", "train", "evaluate", "methods", "methods"]
    with pytest.raises(ConfigError, match="must start with radfinder"):  # checked before any stage runs
        pipeline.run_demo(tmp_path, DemoSettings(methods="fvlm"), log=log)
    assert calls[5:] == []
