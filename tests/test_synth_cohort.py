"""The synthetic cohort on disk: CT-RATE tables and layout, splits, determinism, CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import pytest

from radfinder.cli import main
from radfinder.data.synth import make_cohort, plan_cohort
from radfinder.text.findings import CTRATE_FINDINGS


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "c"
    make_cohort(out, 3, seed=5, workers=1, show_progress=False, preview=True, n_preview=1)
    return out


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="", encoding="utf-8") as fh:
        r = csv.DictReader(fh)
        return list(r.fieldnames or []), list(r)


def _truth(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]


def test_ctrate_tables_and_layout(cohort):
    ds = cohort / "dataset"
    names = set()
    for split, long in (("train", "train"), ("valid", "validation")):
        cols, reps = _rows(ds / "radiology_text_reports" / f"{long}_reports.csv")
        assert cols == ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
        lcols, labs = _rows(ds / "multi_abnormality_labels" / f"{split}_predicted_labels.csv")
        assert lcols == ["VolumeName", *CTRATE_FINDINGS]
        mcols, metas = _rows(ds / "metadata" / f"{long}_metadata.csv")
        assert {"VolumeName", "RescaleSlope", "RescaleIntercept", "XYSpacing", "ZSpacing"} <= set(mcols)
        assert [r["VolumeName"] for r in reps] == [r["VolumeName"] for r in labs] == [r["VolumeName"] for r in metas]
        for r in metas:
            assert re.fullmatch(r"\[[0-9.]+, [0-9.]+\]", r["XYSpacing"])
        for r in reps:
            m = re.fullmatch(r"(train|valid)_(\d+)_([a-z])_(\d+)\.nii\.gz", r["VolumeName"])
            assert m and m.group(1) == split
            patient = f"{split}_{m.group(2)}"
            study = f"{patient}_{m.group(3)}"
            assert (ds / f"{split}_fixed" / patient / study / r["VolumeName"]).is_file()
            assert r["Findings_EN"] and r["Impressions_EN"]
            names.add(r["VolumeName"])
    dcols, de = _rows(cohort / "reports_de.csv")
    assert dcols == ["VolumeName", "Klinische_Angaben", "Technik", "Befund", "Beurteilung"]
    assert {r["VolumeName"] for r in de} == names
    truth = _truth(cohort)
    assert len(truth) == 3
    assert {v["name"] for t in truth for v in t["volumes"]} == names
    assert sorted((cohort / "preview").glob("*.png"))


def test_labels_match_truth_and_lesions(cohort):
    for t in _truth(cohort):
        rendered = {les["finding"] for les in t["lesions"]}
        positive = {f for f, y in t["labels"].items() if y}
        assert rendered == positive  # every positive label is drawn, nothing else is


def test_same_seed_is_byte_identical_and_other_seed_differs(cohort, tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    for out in (first, again):
        make_cohort(out, 1, seed=5, workers=1, show_progress=False, preview=True, n_preview=1)
    a, b = _digest(first), _digest(again)
    assert a == b
    assert any(k.endswith(".dcm") for k in a) and any(k.endswith(".nii.gz") for k in a)
    other = tmp_path / "other"
    make_cohort(other, 1, seed=6, workers=1, show_progress=False)
    assert (other / "truth.jsonl").read_bytes() != (first / "truth.jsonl").read_bytes()
    # A study does not depend on how many others are generated with it.
    assert (first / "truth.jsonl").read_text().splitlines()[0] == (cohort / "truth.jsonl").read_text().splitlines()[0]
    p5, p6 = plan_cohort(60, 5), plan_cohort(60, 6)
    assert [p["labels"] for p in p5] != [p["labels"] for p in p6]


def test_patient_level_splits_are_disjoint():
    plans = plan_cohort(300, 9)
    split_of: dict[str, set[str]] = {}
    name_of: dict[int, set[str]] = {}
    for p in plans:
        split_of.setdefault(p["patient"], set()).add(p["split"])
        name_of.setdefault(p["patient_index"], set()).add(p["patient"])
        assert p["patient"].startswith(p["split"] + "_") and p["study"].startswith(p["patient"] + "_")
    assert all(len(v) == 1 for v in split_of.values())  # no patient in two splits
    assert all(len(v) == 1 for v in name_of.values())  # one name per patient
    assert len({p["patient"] for p in plans}) == len(name_of)
    assert {p["split"] for p in plans} == {"train", "valid"}
    assert any(p["followup"] for p in plans)  # some patients have several studies
    assert {o for p in plans for o in p["instance_order"].values()} == {"ascending", "descending"}


def test_cli_synth_json(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", str(out), "--studies", "1", "--seed", "2", "--workers", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_studies"] == 1 and (out / "truth.jsonl").is_file()
    assert main(["synth", str(out), "--studies", "1", "--json"]) == 2  # not empty, no --overwrite
    assert main(["synth", str(tmp_path / "x"), "--res", "huge"]) == 2
