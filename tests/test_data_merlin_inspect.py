"""Merlin and INSPECT loaders on their synthetic mirrors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers_data import mirror
from radfinder.data.inspect_ct import load_inspect
from radfinder.data.merlin import load_merlin
from radfinder.data.records import DatasetError


@pytest.fixture(scope="module")
def merlin(tmp_path_factory) -> Path:
    return mirror(tmp_path_factory, "merlin")


@pytest.fixture(scope="module")
def inspect_root(tmp_path_factory) -> Path:
    return mirror(tmp_path_factory, "inspect")


def _info(root: Path) -> dict:
    return json.loads((root / "mirror.json").read_text())["studies"]


def test_merlin_splits_and_sections(merlin):
    info = _info(merlin)
    recs = load_merlin(merlin, "all", reports="reports_final.csv")
    assert {r.key for r in recs} == set(info)
    for r in recs:
        assert r.split == info[r.key]["split"] and r.patient == r.key and not r.has_labels
        assert r.findings == info[r.key]["findings"]
        assert r.impressions == info[r.key]["impressions"]
        assert "FINDINGS:" in r.extra["full_report"] and "IMPRESSION:" in r.extra["full_report"]
        assert Path(r.path).name == f"{r.key}.nii.gz" and Path(r.path).is_file()
    test = load_merlin(merlin, "test", reports="reports_final.csv")
    assert test and {r.split for r in test} == {"test"}
    assert [r.key for r in load_merlin(merlin, "valid", reports="reports_final.csv")] == [
        r.key for r in recs if r.split == "val"
    ]


def test_merlin_reads_xlsx_like_csv(merlin):
    pytest.importorskip("openpyxl")
    assert (merlin / "reports_final.xlsx").is_file()
    from_xlsx = load_merlin(merlin, "all")  # the default table is the xlsx when openpyxl is installed
    from_csv = load_merlin(merlin, "all", reports="reports_final.csv")
    assert [(r.key, r.split, r.findings, r.impressions) for r in from_xlsx] == [
        (r.key, r.split, r.findings, r.impressions) for r in from_csv
    ]


def test_merlin_layout_errors(merlin, tmp_path):
    with pytest.raises(DatasetError, match="no reports_final.xlsx or reports_final.csv"):
        load_merlin(tmp_path)
    with pytest.raises(DatasetError, match="split must be"):
        load_merlin(merlin, "holdout")
    root = tmp_path / "Merlin"
    (root / "merlin_data").mkdir(parents=True)
    shutil.copy(merlin / "reports_final.csv", root)
    with pytest.raises(DatasetError, match="none of the"):
        load_merlin(tmp_path, "all")  # the folder holding Merlin/ is accepted as root
    assert len(load_merlin(tmp_path, "all", require_files=False)) == len(_info(merlin))
    (root / "reports_final.csv").write_text("id,text\n1,a\n")
    with pytest.raises(DatasetError, match="reports_final.csv: not a Merlin report table"):
        load_merlin(root, "all")


def test_inspect_discovers_volumes_splits_and_patients(inspect_root):
    info = _info(inspect_root)
    recs = load_inspect(inspect_root, "all")
    assert {r.key for r in recs} == set(info)
    for r in recs:
        e = info[r.key]
        assert (r.split, r.patient, r.impressions, r.findings) == (e["split"], e["patient"], e["impressions"], "")
        assert Path(r.path) == inspect_root / "full" / "CTPA" / f"{r.key}.nii.gz"
    train = load_inspect(inspect_root / "full", "train")  # the full/ folder itself is a root too
    assert train and {r.split for r in train} == {"train"}
    patients_by_split = {}
    for r in recs:
        patients_by_split.setdefault(r.patient, set()).add(r.split)
    assert all(len(s) == 1 for s in patients_by_split.values())


def test_inspect_missing_volumes_and_duplicates(inspect_root, tmp_path):
    root = tmp_path / "full"
    root.mkdir()
    for t in (inspect_root / "full").glob("impressions_*.tsv"):
        shutil.copy(t, root)
    vols = sorted((inspect_root / "full" / "CTPA").glob("*.nii.gz"))
    (root / "vols").mkdir()
    shutil.copy(vols[0], root / "vols")
    with pytest.warns(UserWarning, match="have no volume file"):
        recs = load_inspect(tmp_path, "all")
    assert [r.key for r in recs] == [vols[0].name.removesuffix(".nii.gz")]
    assert len(load_inspect(tmp_path, "all", require_files=False)) == len(vols)
    shutil.copy(vols[0], root / vols[0].name)
    with pytest.raises(DatasetError, match="two volume files for INSPECT id"):
        load_inspect(tmp_path, "all")
    with pytest.raises(DatasetError, match="no impressions_"):
        load_inspect(root / "vols")
