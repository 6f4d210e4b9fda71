"""Smoke test of the demo pipeline: a very small cohort and very few steps. Checks that every stage runs, that a
re-run resumes (skips every stage), that the outputs exist and that metrics.json holds the headline keys, and
that `radfinder evaluate` reproduces the demo's evaluation from the same checkpoint and feature cache.
No performance assertion: a handful of studies and one training step say nothing about quality."""

from __future__ import annotations

import csv
import json

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
    for g in ("model", "nearest_report", "most_common_report"):  # report generation on the held-out split
        assert {"ce_macro_f1", "rouge_l", "bleu1", "bleu4", "bertscore_f1"} <= set(m["report_generation"][g]), g
    assert (out / "model" / "generator_bank.json").is_file() and (out / "report_generation_examples.md").is_file()
    assert any("metric (held-out valid split)" in line for line in logs)
    assert logs[-1].startswith("browse:  radfinder serve") and str(out / "library") in logs[-1]  # issue 14.7

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
    assert set(mm["methods"]["scale-vlp"]) == {"retrieval", "zero_shot"}  # no localization objective, no score
    assert set(mm["methods"]["fvlm"]) == {"anatomy_zero_shot"}
    assert mm["methods"]["fvlm"]["anatomy_zero_shot"]["macro_auroc"] is not None
    assert set(mm["methods"]["radfinder+fvlm"]) == {"retrieval", "zero_shot", "localization", "anatomy_zero_shot"}
    rows = [r for r in (out / "methods.md").read_text().splitlines() if r.startswith("| ") and "---" not in r]
    assert len(rows) == 5  # header + one row per method

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
