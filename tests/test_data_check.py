"""`radfinder check-data`: clean mirrors pass; deleted, truncated and constant volumes, leaks, duplicates and
missing labels are found, with the exit code and JSON summary."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpers_data import mirror, synth_cohort
from radfinder.cli.data_cmds import check_data  # noqa: F401  (registers the command on the app)
from radfinder.cli.main import main
from radfinder.data.check import check_dataset, volume_problems


@pytest.fixture(scope="module")
def broken_merlin(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A Merlin mirror with one volume deleted, one truncated and one constant."""
    root = tmp_path_factory.mktemp("broken") / "merlin"
    shutil.copytree(mirror(tmp_path_factory, "merlin"), root)
    vols = sorted((root / "merlin_data").glob("*.nii.gz"))
    assert len(vols) >= 3
    deleted, truncated, constant = vols[:3]
    deleted.unlink()
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    img = nib.load(constant)
    arr = np.full(img.shape, -1000, np.int16)
    constant.write_bytes(gzip.compress(nib.Nifti1Image(arr, img.affine).to_bytes()))
    return root, {"deleted": deleted.name[:-7], "truncated": truncated.name[:-7], "constant": constant.name[:-7]}


def _run(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().out


@pytest.mark.slow  # 24 s in the full suite (--durations)
def test_clean_cohort_and_mirrors_pass(tmp_path_factory, capsys):
    cohort = synth_cohort(tmp_path_factory)
    code, out = _run(["check-data", "ctrate", str(cohort), "--deep", "--workers", "2", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["n_errors"] == 0, doc["problems"]
    assert doc["n_read"] == doc["n_records"] == sum(doc["splits"].values()) > 0
    assert doc["n_with_labels"] == doc["n_with_report"] == doc["n_records"]
    r = check_dataset("radchestct", mirror(tmp_path_factory, "radchestct"), deep=True, workers=1,
                      show_progress=False, spacing_mm=4.0)  # fmt: skip
    assert r.exit_code() == 0, [p.to_json() for p in r.errors]
    assert {p.code for p in r.warnings} == {"label_mapping"}  # the mirror has only some abnormality columns
    assert r.exit_code(strict=True) == 1
    r = check_dataset("inspect", mirror(tmp_path_factory, "inspect"), show_progress=False)
    assert r.exit_code(strict=True) == 0 and r.summary["n_with_report"] == r.summary["n_records"]


def test_shallow_check_finds_the_deleted_volume(broken_merlin, capsys):
    root, names = broken_merlin
    code, out = _run(["check-data", "merlin", str(root)], capsys)
    assert code == 1
    assert "ERROR missing_volume: 1" in out and f"{names['deleted']}.nii.gz: file not found" in out
    assert "--deep" in out and "FAILED" in out


def test_deep_check_finds_truncated_and_constant_volumes(broken_merlin, capsys):
    root, names = broken_merlin
    code, out = _run(["check-data", "merlin", str(root), "--deep", "--workers", "1", "--json"], capsys)
    doc = json.loads(out)
    assert code == 1 and not doc["ok"]
    found = {(p["code"], p["key"]) for p in doc["problems"]}
    assert ("missing_volume", names["deleted"]) in found
    assert ("unreadable_volume", names["truncated"]) in found
    assert ("constant_volume", names["constant"]) in found
    assert doc["n_unreadable"] == 1 and doc["n_read"] == doc["n_records"] - 2
    assert doc["problem_counts"] == {"error:constant_volume": 1, "error:missing_volume": 1,
                                     "error:unreadable_volume": 1}  # fmt: skip
    one = [p for p in doc["problems"] if p["code"] == "unreadable_volume"][0]
    assert one["path"].endswith(f"{names['truncated']}.nii.gz") and "NIfTI" in one["message"]


def test_leaks_duplicates_missing_labels_and_orphans(tmp_path_factory, tmp_path, capsys):
    cohort = synth_cohort(tmp_path_factory)
    vols = sorted((cohort / "dataset").rglob("*.nii.gz"))
    rows = ["id,volume,patient,split,report,Lung nodule",
            f"a,{vols[0]},p1,train,Findings: x. Impression: y.,1",
            f"b,{vols[1]},p1,valid,Findings: x. Impression: y.,0",
            f"c,{vols[2]},p2,valid,,",
            f"d,{tmp_path / 'gone.nii.gz'},p3,test,Findings: x.,1"]  # fmt: skip
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    r = check_dataset("manifest", tmp_path / "m.csv", show_progress=False)
    codes = {(p.severity, p.code, p.key) for p in r.problems}
    assert ("error", "patient_in_several_splits", "p1") in codes
    assert ("error", "missing_volume", "d") in codes
    assert ("error", "missing_report", "c") in codes
    assert ("warning", "missing_labels", "c") in codes
    assert r.exit_code() == 1
    (tmp_path / "dup.csv").write_text(f"id,volume\na,{vols[0]}\na,{vols[1]}\n")
    r = check_dataset("manifest", tmp_path / "dup.csv", show_progress=False)
    assert [p.code for p in r.errors] == ["load_failed"] and "duplicate key 'a'" in r.errors[0].message
    # CT-RATE: an unlisted volume and a missing label row
    root = tmp_path / "ct"
    shutil.copytree(cohort / "dataset", root / "dataset")
    extra = root / "dataset" / "valid_fixed" / "valid_99" / "valid_99_a" / "valid_99_a_1.nii.gz"
    extra.parent.mkdir(parents=True)
    shutil.copy(vols[0], extra)
    labels = root / "dataset" / "multi_abnormality_labels" / "valid_predicted_labels.csv"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join(lines[:-1]) + "\n")
    r = check_dataset("ctrate", root, "valid", show_progress=False)
    codes = {(p.severity, p.code, p.key) for p in r.problems}
    assert ("warning", "orphan_volume", "valid_99_a_1") in codes
    dropped = lines[-1].split(",")[0].removesuffix(".nii.gz")
    assert ("error", "missing_labels", dropped) in codes
    code, out = _run(["check-data", "ctrate", str(root), "--split", "valid"], capsys)
    assert code == 1 and "missing_labels" in out


def test_volume_rules():
    base = {"ok": True, "shape": [100, 100, 60]}
    assert volume_problems({**base, "min": -1024.0, "max": 1500.0}) == []
    assert [c for _, c, _ in volume_problems({**base, "min": 0.0, "max": 4095.0})] == ["implausible_hu"]
    # raw values of an un-fixed CT-RATE file are fine once rescaled with the metadata
    assert volume_problems({**base, "min": 0.0, "max": 4095.0}, rescale=(1.0, -1024.0)) == []
    assert [c for _, c, _ in volume_problems({**base, "min": -1.0, "max": 1.0})] == ["implausible_hu"]
    assert [c for _, c, _ in volume_problems({**base, "min": -1000.0, "max": -900.0})] == ["implausible_hu"]
    assert [s for s, _, _ in volume_problems({**base, "min": -32768.0, "max": 2000.0})] == ["warning"]
    assert [c for _, c, _ in volume_problems({**base, "shape": [100, 100, 3], "min": -1000.0, "max": 50.0})] == [
        "few_slices"
    ]


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["check-data", "nosuchkind", str(tmp_path)]) == 2
    assert main(["check-data", "ctrate", str(tmp_path / "missing")]) == 2
    assert main(["check-data", "ctrate", str(tmp_path), "--opt", "novalue"]) == 2
    assert "error:" in capsys.readouterr().err
