"""Smoke test of the demo pipeline: a very small cohort and very few steps. Checks that every stage runs, that a
re-run resumes (skips every stage), that the outputs exist and that metrics.json holds the headline keys, and
that `radfinder evaluate` reproduces the demo's evaluation from the same checkpoint and feature cache.
No performance assertion: a handful of studies and one training step say nothing about quality."""

from __future__ import annotations

import csv
import json
import re

import pytest

from radfinder.cli import main
from radfinder.demo import STAGE_NAMES, DemoSettings, run_demo
from radfinder.errors import ConfigError


# Not marked slow on purpose (~40 s on 2 cores): `make test` must cover the main job end to end (issue 11).
def test_demo_pipeline_runs_resumes_and_evaluate_cli_agrees(tmp_path, capsys):
    out = tmp_path / "demo"
    s = DemoSettings(studies=6, seed=3, valid_fraction=0.5, workers=1, train_epochs=1.0,
                     micro_batch=2, max_steps=1, n_boot=20)
    logs: list[str] = []
    result = run_demo(out, s, log=logs.append)
    assert list(result["stages"]) == STAGE_NAMES
    for name in STAGE_NAMES:
        assert (out / "stages" / f"{name}.json").is_file()
        assert any(line.startswith(f"[{STAGE_NAMES.index(name) + 1}/") and name in line for line in logs)
    for rel in ("cohort/truth.jsonl", "mining/pairs.jsonl", "mining/train_labels.csv", "encoder/config.json",
                "features/cache.json", "model/config.json", "eval/report.html", "eval/metrics.json", "metrics.json"):
        assert (out / rel).exists(), rel
    m = json.loads((out / "metrics.json").read_text())
    for section, key in [("retrieval", "R@10"), ("retrieval", "chance_R@10"), ("zero_shot", "macro_auroc"),
                         ("localization", "mae_mm"), ("localization", "baseline_middle_mae_mm"),
                         ("localization", "baseline_random_mae_mm")]:
        assert key in m[section], (section, key)
    assert m["retrieval"]["R@10"] is not None
    ceiling = m["text_ceiling"]  # zero-shot on the held-out reports: trained text side and frozen MiniLM
    for key in ("zero_shot_macro_auroc", "frozen_zero_shot_macro_auroc"):  # None when no finding has both classes
        assert key in ceiling and (ceiling[key] is None or 0.0 <= ceiling[key] <= 1.0), key
    assert set(ceiling["negation_cosine"]) == {"trained_report_head", "trained_tower", "frozen_tower"}
    for g in ("model", "nearest_report", "most_common_report"):  # report generation on the held-out split
        assert {"ce_macro_f1", "rouge_l", "bleu1", "bleu4", "bertscore_f1"} <= set(m["report_generation"][g]), g
    assert (out / "model" / "generator_bank.json").is_file() and (out / "report_generation_examples.md").is_file()
    assert any("metric (held-out valid split)" in line for line in logs)
    assert logs[-1].startswith("browse:  radfinder serve") and str(out / "library") in logs[-1]  # issue 14.7
    # the library's finding-sentence search figures sit beside the others (issue 20.4)
    lib_prec = json.loads((out / "library_precision.json").read_text())["image"]
    fs = m["library"]["finding_search"]
    assert fs["mean_precision_at_10"] == lib_prec["mean_precision"] and fs["mean_chance"] == lib_prec["mean_chance"]
    assert fs["calibrated"] is True and (out / "model" / "calibration.json").is_file()
    assert m["retrieval"]["median_rank_over_gallery"] == pytest.approx(
        m["retrieval"]["median_rank"] / m["retrieval"]["n_gallery"])
    _no_valid_report_reaches_training(out, s)

    # resume: nothing runs again, so nothing is rewritten
    logs.clear()
    written = {rel: ((out / rel).read_bytes(), (out / rel).stat().st_mtime_ns)
               for rel in ("metrics.json", "model/config.json", "features/cache.json")}
    run_demo(out, s, log=logs.append)
    assert all("skipped" in line for line in logs if line.startswith("["))
    assert {rel: ((out / rel).read_bytes(), (out / rel).stat().st_mtime_ns) for rel in written} == written
    with pytest.raises(ConfigError, match="other settings"):
        run_demo(out, DemoSettings(studies=7, seed=3))

    # --methods: only the comparison stage runs again; every method trains on the same cohort and is scored on the
    # held-out split, RadFinder's row being the main run's own numbers
    logs.clear()
    methods = "radfinder,scale-vlp,fvlm,radfinder+fvlm"
    run_demo(out, DemoSettings(**{**s.as_dict(), "methods": methods}), log=logs.append)
    ran = [line for line in logs if line.startswith("[") and "skipped" not in line]
    assert ran and all("methods" in line for line in ran)
    mm = json.loads((out / "metrics.json").read_text())
    assert list(mm["methods"]) == methods.split(",")
    assert mm["methods"]["radfinder"]["retrieval"]["R@10"] == m["retrieval"]["R@10"]  # top level = first method
    # no localization objective, no score; the paired differences from RadFinder cover the shared tasks only
    assert set(mm["methods"]["scale-vlp"]) == {"retrieval", "zero_shot", "delta_vs_radfinder"}
    assert set(mm["methods"]["scale-vlp"]["delta_vs_radfinder"]) == {"retrieval", "zero_shot"}
    d = mm["methods"]["scale-vlp"]["delta_vs_radfinder"]["zero_shot"]["macro_auroc"]
    assert d["difference"] == pytest.approx(mm["methods"]["scale-vlp"]["zero_shot"]["macro_auroc"]
                                            - m["zero_shot"]["macro_auroc"], abs=1e-9)
    assert d["ci95"][0] <= d["ci95"][1] and d["n_boot"] == s.n_boot
    # fVLM shares no task with RadFinder: it is paired with radfinder+fvlm on the anatomy-level zero-shot task
    assert set(mm["methods"]["fvlm"]) == {"anatomy_zero_shot", "delta_vs_radfinder+fvlm"}
    assert set(mm["methods"]["fvlm"]["delta_vs_radfinder+fvlm"]) == {"anatomy_zero_shot"}
    assert mm["methods"]["fvlm"]["anatomy_zero_shot"]["macro_auroc"] is not None
    assert set(mm["methods"]["radfinder+fvlm"]) == {"retrieval", "zero_shot", "localization", "anatomy_zero_shot",
                                                   "delta_vs_radfinder"}  # fmt: skip
    assert mm["methods_seconds"]["total"] >= max(v for k, v in mm["methods_seconds"].items() if k != "total")
    md = (out / "methods.md").read_text()
    rows = [r for r in md.split("## Difference")[0].splitlines() if r.startswith("| ") and "---" not in r]
    assert len(rows) == 5  # header + one row per method
    deltas = [r for r in md.split("## Difference")[1].splitlines() if r.startswith("| ") and "---" not in r]
    assert [r.split(" | ")[:2] for r in deltas[1:]] == [["| scale-vlp", "radfinder"], ["| fvlm", "radfinder+fvlm"],
                                                        ["| radfinder+fvlm", "radfinder"]]  # fmt: skip

    # `radfinder evaluate` on the demo's checkpoint and features sees every held-out volume, report and snippet
    # (counted here from the cohort's files, not from the demo's own evaluation, which runs the same code); the
    # metric values themselves are checked against hand computations in test_evaluate_tasks.py
    ev = tmp_path / "ev"
    cmd = ["evaluate", str(out / "model"), "--data", str(out / "cohort"), "--features", str(out / "features"),
           "--pairs", str(out / "mining" / "pairs.jsonl"), "--task", "all", "--task", "report-generation",
           "--out", str(ev), "--n-boot", "0", "--json"]
    # the leakage guard: the generator may not be fitted on the reports it is scored against
    assert main([*cmd, "--train-split", "valid"]) == 2
    assert "--train-split valid is the evaluated split" in capsys.readouterr().err
    assert not (ev / "metrics.json").exists()
    assert main([*cmd, "--train-split", "train"]) == 0
    cli = json.loads((ev / "metrics.json").read_text())
    # the CLI on the demo's checkpoint and features gives the demo's own held-out numbers (a different code path:
    # typer options, dataset loading by kind and split, the task registry), the demo's read from its metrics.json
    assert cli["retrieval"]["text_to_volume"]["recall"]["R@10"] == pytest.approx(m["retrieval"]["R@10"], abs=1e-12)
    assert cli["classification"]["zero-shot (mean7)"]["macro_auroc"] == pytest.approx(
        m["zero_shot"]["macro_auroc"], abs=1e-12)
    assert cli["localization"]["model"]["mae_mm"] == pytest.approx(m["localization"]["mae_mm"], abs=1e-9)
    for g in ("model", "nearest_report", "most_common_report"):
        for key in ("ce_macro_f1", "rouge_l", "bleu4", "bertscore_f1"):
            assert cli["report-generation"][g][key] == pytest.approx(m["report_generation"][g][key], abs=1e-9), (g, key)
    (table,) = (out / "cohort").rglob("validation_reports.csv")
    with table.open(newline="", encoding="utf-8") as fh:
        volumes = {row["VolumeName"].removesuffix(".nii.gz") for row in csv.DictReader(fh)}
    # valid_3_a_2 is reconstruction 2 of report valid_3_a; the retrieval protocol keeps each report's lowest one
    first: dict[str, str] = {}
    for v in sorted(volumes, key=lambda v: (v.rsplit("_", 1)[0], int(v.rsplit("_", 1)[1]))):
        first.setdefault(v.rsplit("_", 1)[0], v)
    t2v = cli["retrieval"]["text_to_volume"]
    assert (t2v["n_queries"], t2v["n_gallery"]) == (len(first), len(first))
    assert all(abs(r * len(first) - round(r * len(first))) < 1e-6 for r in t2v["recall"].values())
    pairs = [json.loads(line) for line in (out / "mining" / "pairs.jsonl").read_text().splitlines() if line.strip()]
    assert cli["localization"]["n_snippets"] == sum(p["key"] in first.values() for p in pairs) > 0
    assert (ev / "report.html").is_file()


def _no_valid_report_reaches_training(out, s):
    """Everything the demo's training reads (records, their reports and labels, snippets, the label table) and
    what it fits on the train split (generator bank, calibration) comes from train-split patients only."""
    from radfinder.data.ctrate import load_ctrate
    from radfinder.demo.config import train_config_dict
    from radfinder.train.config import TrainConfig
    from radfinder.train.data import build_sources

    valid = load_ctrate(out / "cohort", split="valid", mode="dup_all")
    valid_keys, valid_patients = {r.key for r in valid}, {r.patient for r in valid}
    train = load_ctrate(out / "cohort", split="train", mode="first_all")
    cfg = TrainConfig.model_validate(train_config_dict(s, out, out / "encoder-standardized", len(train)))
    (source,) = build_sources(cfg.data.datasets)
    assert source.records and {r.split for r in source.records} == {"train"}
    assert not {r.key for r in source.records} & valid_keys
    assert not {r.patient for r in source.records} & valid_patients
    own = {r.key: r.report_text for r in source.records}
    assert set(source.snippets) <= set(own)
    for key, snippets in source.snippets.items():  # each snippet is cut from its own (train) report
        words = set(re.findall(r"[a-z]+", own[key].lower()))
        assert all(set(re.findall(r"[a-z]+", sn.text.lower())) <= words for sn in snippets), key
    with (out / "mining" / "train_labels.csv").open(newline="") as fh:
        names = {row["VolumeName"].removesuffix(".nii.gz") for row in csv.DictReader(fh)}
    assert names and not names & valid_keys
    assert json.loads((out / "model" / "generator_bank.json").read_text())["meta"]["train_split"] == ["train"]
    assert json.loads((out / "model" / "calibration.json").read_text())["meta"]["splits"] == ["train"]


@pytest.mark.slow
def test_demo_with_the_pretrained_astra_encoder_standardises_the_combiner_inputs(tmp_path):
    """`--encoder astra`: the real pretrained CT backbone gives 2048-d features; the combiner that training starts
    from sees them standardised on the train split (checked on its first layer), and the pipeline finishes."""
    import torch

    from radfinder.features import FeatureStore, feature_statistics
    from radfinder.models.astra import astra_available
    from radfinder.models.pretrained import from_pretrained

    if not astra_available():
        pytest.skip("ASTRA weights (radfinder[astra]) not installed")
    out = tmp_path / "demo"
    s = DemoSettings(studies=6, seed=3, valid_fraction=0.5, workers=1, encoder="astra", device="cpu",
                     train_epochs=1.0, micro_batch=2, max_steps=1, n_boot=10)
    run_demo(out, s, log=lambda m: None)
    store = FeatureStore.open(out / "features")
    assert store.feature_dim == 2048
    # the saved config names the architecture only: the checkpoint loads without the radfinder[astra] extra
    saved = json.loads((out / "model" / "config.json").read_text())["model"]["window_encoder"]
    assert saved["kind"] == "resnet3d" and saved["options"] == {}
    init = from_pretrained(out / "encoder-standardized")
    train_keys = [k for k in store.keys() if k.startswith("train_")]
    rec = store.read(train_keys[0])
    stats = feature_statistics(store, train_keys)
    cls, avg = (torch.from_numpy(x.astype("float32")).reshape(-1, 2048) for x in (rec.cls, rec.patch_average))
    original = from_pretrained(out / "encoder").feature_comb_image.patch_proj
    standardized = torch.cat(
        [
            (cls - stats["cls_mean"]) / stats["cls_std"].clamp_min(1e-3),
            (avg - stats["patch_average_mean"]) / stats["patch_average_std"].clamp_min(1e-3),
        ],
        dim=-1,
    )
    with torch.no_grad():
        got = init.feature_comb_image.patch_proj(torch.cat([cls, avg], dim=-1))
        torch.testing.assert_close(got, original(standardized), rtol=1e-3, atol=1e-3)
    assert json.loads((out / "metrics.json").read_text())["zero_shot"]["macro_auroc"] is not None
