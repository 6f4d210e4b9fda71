"""The `model` generator with a model: `radfinder generate-fit` / `generate` on a tiny trained demo (JSON shape,
the bank saved as JSON beside the checkpoint, a segmentation), the evaluation task's outputs depending on the
train split only, and the errors a user sees for a missing or foreign bank and a bad scan."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from radfinder.cli import main
from radfinder.eval.generation import fit_bank
from radfinder.text.findings import CTRATE_FINDINGS

REPORTS = [("Cardiomegaly. No pleural effusion.", "1. Cardiomegaly."), ("Heart size is normal.", "No acute findings.")]


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    from radfinder.demo import DemoSettings, run_demo

    out = tmp_path_factory.mktemp("gen") / "demo"
    s = DemoSettings(studies=6, seed=3, valid_fraction=0.5, workers=1, train_epochs=1.0, micro_batch=2, max_steps=1,
                     n_boot=20, progress=False, report_generation=False)
    run_demo(out, s, stop_after="train", log=lambda m: None)
    return out


def _bank_for(model, path):
    from radfinder.eval.generation.fit import model_hash

    y = np.zeros((2, 18))
    y[0, CTRATE_FINDINGS.index("Cardiomegaly")] = 1
    bank = fit_bank(REPORTS, np.full((2, 18), 0.5), y, meta={"model_hash": model_hash(model)})
    return bank.save(path)


def test_bad_inputs_are_user_errors(tmp_path, capsys):
    from radfinder.api import load_model

    scan = tmp_path / "scan.nii.gz"
    rc = main(["generate", "tiny", str(scan), "--json"])
    assert rc == 2 and "pass the generator bank" in capsys.readouterr().err
    rc = main(["generate", "tiny", str(scan), "--bank", str(tmp_path / "none.json")])
    assert rc == 2 and "generator bank not found" in capsys.readouterr().err
    model = load_model("tiny", device="cpu")
    bank = _bank_for(model, tmp_path / "bank.json")
    rc = main(["generate", "tiny", str(scan), "--bank", str(bank)])
    err = capsys.readouterr().err
    assert rc == 2 and "scan.nii.gz" in err and "internal error" not in err
    data = json.loads(bank.read_text())
    data["meta"]["model_hash"] = "0" * 16
    bank.write_text(json.dumps(data))
    rc = main(["generate", "tiny", str(scan), "--bank", str(bank)])
    assert rc == 2 and "was fitted for model" in capsys.readouterr().err
    rc = main(["generate-fit", "tiny", "--data", str(tmp_path), "--json"])
    assert rc == 2 and "give --out" in capsys.readouterr().err


@pytest.mark.slow
def test_generate_fit_and_generate_cli_on_a_trained_model(tiny_demo, capsys):
    model, cohort = tiny_demo / "model", tiny_demo / "cohort"
    rc = main(["generate-fit", str(model), "--data", str(cohort), "--split", "train", "--features",
               str(tiny_demo / "features"), "--json"])
    assert rc == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["bank"] == str(model / "generator_bank.json") and (model / "generator_bank.json").is_file()
    assert set(fit["thresholds"]) == set(CTRATE_FINDINGS) and fit["n_reports"] == 3 and fit["train_split"] == ["train"]
    (scan,) = sorted((cohort / "dataset" / "valid_fixed").rglob("*_a_1.nii.gz"))[:1]
    seg = cohort / "masks" / scan.name
    out = tiny_demo / "gen.json"
    rc = main(["generate", str(model), str(scan), "--seg", str(seg), "--json", "--out", str(out)])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == got
    assert set(got) == {"model", "scan", "generator", "findings", "impression", "present", "probabilities",
                        "thresholds"}
    assert got["generator"] == "model" and got["findings"] and got["impression"]
    assert set(got["probabilities"]) == set(CTRATE_FINDINGS)
    for p in got["present"]:
        assert p["probability"] >= p["threshold"]
        assert {"finding", "sentence", "cell", "world_z_mm", "classes_in_cell"} <= set(p)
    # the API, 1:1, with a prepared generator (text embedded once) writes the same report
    from radfinder.api import encode_volume, generate_report, load_model, prepare_generator

    m = load_model(model, device="cpu")
    enc = encode_volume(m, scan)
    api = generate_report(m, enc, seg=seg, generator=prepare_generator(m))
    assert (api.findings, api.impression) == (got["findings"], got["impression"])
    plain = generate_report(m, enc, model / "generator_bank.json")  # no segmentation: same scores, no classes
    assert plain.probabilities == pytest.approx(got["probabilities"]) and all("anatomy" not in p for p in plain.present)
    rc = main(["generate", str(model), str(scan)])  # the bank beside the checkpoint, text output
    text = capsys.readouterr().out
    assert rc == 0 and text.startswith("Findings: ") and "\nImpression: " in text


@pytest.mark.slow
def test_report_generation_task_depends_on_the_train_split_only(tiny_demo, tmp_path):
    from radfinder.data.ctrate import load_ctrate
    from radfinder.eval.report_generation_task import GENERATORS, run_report_generation
    from radfinder.models.pretrained import from_pretrained

    model = from_pretrained(tiny_demo / "model")
    train = load_ctrate(tiny_demo / "cohort", split="train")
    valid = load_ctrate(tiny_demo / "cohort", split="valid")
    kw = {"features": tiny_demo / "features", "bertscore": False, "n_examples": 3, "n_boot": 200}
    a = run_report_generation(model, train, valid, bank_out=tmp_path / "a.json", **kw)
    changed = copy.deepcopy(valid)
    for r in changed:  # other labels and other reports for the evaluated split
        r.labels = 1 - np.clip(r.labels, 0, 1)
        r.findings, r.impressions = "Large right pleural effusion. Cardiomegaly.", "1. Pleural effusion."
    b = run_report_generation(model, train, changed, bank_out=tmp_path / "b.json", **kw)
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    assert [e["model"] for e in a["examples"]] == [e["model"] for e in b["examples"]]
    assert [e["nearest_report"] for e in a["examples"]] == [e["nearest_report"] for e in b["examples"]]
    assert a["model"]["rouge_l"] != b["model"]["rouge_l"]  # the references did change
    for g in GENERATORS:
        assert {"ce_macro_f1", "rouge_l", "bleu1", "bleu4"} <= set(a[g])
    assert a["n_test"] == len({r.report_id for r in valid})


@pytest.mark.slow
def test_report_generation_is_an_evaluation_task_fitted_on_another_split(tiny_demo, tmp_path, capsys):
    from radfinder.data.ctrate import load_ctrate
    from radfinder.eval.report_generation_task import run_report_generation
    from radfinder.models.pretrained import from_pretrained

    base = ["evaluate", str(tiny_demo / "model"), "--data", str(tiny_demo / "cohort"), "--features",
            str(tiny_demo / "features"), "--task", "report-generation", "--n-boot", "50", "--json"]
    assert main([*base, "--out", str(tmp_path / "a"), "--train-split", "valid"]) == 2
    assert "is the evaluated split" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b")]) == 0  # no training split: skipped with the reason
    skipped = json.loads((tmp_path / "b" / "metrics.json").read_text())["metadata"]["skipped"]
    assert "--train-split" in skipped["report-generation"]
    assert main([*base, "--out", str(tmp_path / "c"), "--train-split", "train"]) == 0
    got = json.loads((tmp_path / "c" / "metrics.json").read_text())["report-generation"]
    model = from_pretrained(tiny_demo / "model")
    want = run_report_generation(model, load_ctrate(tiny_demo / "cohort", split="train", mode="first_all"),
                                 load_ctrate(tiny_demo / "cohort", split="valid", mode="first_all"),
                                 features=tiny_demo / "features", n_boot=50)
    for g in ("model", "nearest_report", "most_common_report"):
        assert got[g]["rouge_l"] == pytest.approx(want[g]["rouge_l"])
        assert got[g]["ce_macro_f1"] == want[g]["ce_macro_f1"]
