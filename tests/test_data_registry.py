"""`load_dataset` over every kind, and the generic manifest loader (CSV and JSONL)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers_data import mirror, synth_cohort, truth
from radfinder.data.manifest import load_manifest
from radfinder.data.records import DatasetError
from radfinder.data.registry import DATASETS, load_dataset
from radfinder.data.synth.mirrors import write_manifest_mirror
from radfinder.text.findings import CTRATE_FINDINGS


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return synth_cohort(tmp_path_factory)


def test_every_kind_loads_unique_keys(cohort, tmp_path_factory, tmp_path):
    manifest = tmp_path / "m.csv"
    write_manifest_mirror(cohort, manifest)
    roots = {
        "ctrate": cohort,
        "radchestct": mirror(tmp_path_factory, "radchestct"),
        "merlin": mirror(tmp_path_factory, "merlin"),
        "inspect": mirror(tmp_path_factory, "inspect"),
        "manifest": manifest,
    }
    assert set(roots) == set(DATASETS)
    for kind, root in roots.items():
        recs = load_dataset(kind, root, "all" if kind != "ctrate" else "train", **(
            {"spacing_mm": 4.0} if kind == "radchestct" else {}))  # fmt: skip
        assert recs, kind
        assert len({r.key for r in recs}) == len(recs)
        assert all(r.labels.shape == (18,) and r.patient for r in recs)
    assert load_dataset("CT-RATE", cohort)[0].split == "valid"  # alias, default split
    alias = load_dataset("rad_chestct", roots["radchestct"])
    assert [r.key for r in alias] == [r.key for r in load_dataset("radchestct", roots["radchestct"], "all")]


def test_options_exclude_and_limit(cohort):
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \['modes'\]; valid: mode, dev_fraction"):
        load_dataset("ctrate", cohort, "train", modes="dup_all")
    with pytest.raises(DatasetError, match="unknown dataset kind 'ctrat'"):
        load_dataset("ctrat", cohort)
    dup = load_dataset("ctrate", cohort, "train", mode="dup_all")
    first = dup[0].key
    assert first not in {r.key for r in load_dataset("ctrate", cohort, "train", mode="dup_all", exclude=[first])}
    kept = load_dataset("ctrate", cohort, "train", mode="dup_all", exclude=f"{dup[0].report_id}_*")
    assert {r.key for r in kept} == {r.key for r in dup if r.report_id != dup[0].report_id}
    assert len(load_dataset("ctrate", cohort, "train", mode="dup_all", limit=1)) == 1


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_manifest_roundtrip(cohort, tmp_path, suffix):
    path = tmp_path / f"manifest{suffix}"
    write_manifest_mirror(cohort, path)
    by_study = {s["study"]: s for s in truth(cohort)}
    recs = load_manifest(path)
    assert len(recs) == sum(len(s["volumes"]) for s in by_study.values())
    for r in recs:
        s = by_study[r.report_id]
        assert (r.patient, r.split) == (s["patient"], s["split"])
        assert r.findings == s["texts"]["en"]["Findings_EN"] and r.impressions == s["texts"]["en"]["Impressions_EN"]
        assert r.labels.tolist() == [float(s["labels"][f]) for f in CTRATE_FINDINGS]
        assert Path(r.path).is_file()
    assert {r.split for r in load_manifest(path, "valid")} == {"valid"}
    assert len(load_manifest(path, "all")) == len(recs)


def test_manifest_columns_labels_and_errors(tmp_path):
    (tmp_path / "v").mkdir()
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(
        "volume,findings,impressions,lung_nodule,EMPHYSEMA,site\nv/a.nii.gz,f1,i1,1,,x\nv/b.nii.gz,f2,i2,0,-1,y\n"
    )
    a, b = load_manifest(csv_path)
    assert (a.key, a.path, a.patient, a.extra) == ("a", str(tmp_path / "v" / "a.nii.gz"), "a", {"site": "x"})
    j, e = CTRATE_FINDINGS.index("Lung nodule"), CTRATE_FINDINGS.index("Emphysema")
    assert (a.labels[j], a.labels[e], b.labels[j], b.labels[e]) == (1, -1, 0, -1)
    assert np.all(np.delete(a.labels, [j, e]) == -1)
    with pytest.raises(DatasetError, match="none of the 2 volumes exist"):
        load_manifest(csv_path, require_files=True)
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"volume": "v/a.nii.gz", "report": "Findings: x.\nImpression: y.",
                                 "labels": {"Lung nodule": 1}}) + "\n"
                     + json.dumps({"volume": "v/b.nii.gz", "labels": [0] * 18}) + "\n")  # fmt: skip
    ra, rb = load_manifest(jsonl)
    assert (ra.findings, ra.impressions, ra.labels[j]) == ("x.", "y.", 1) and rb.labels.tolist() == [0.0] * 18
    bad = {
        "no volume column": ("x.csv", "path,report\na,b\n", "needs a 'volume' column"),
        "duplicate": ("d.csv", "volume\nv/a.nii.gz\nw/a.nii.gz\n", "duplicate key 'a'"),
        "json": ("j.jsonl", '{"volume": "a"}\n{oops\n', r"j.jsonl:2: invalid JSON"),
        "labels": ("l.jsonl", '{"volume": "a", "labels": [1, 0]}\n', "'labels' has 2 values"),
        "names": ("n.jsonl", '{"volume": "a", "labels": {"Nodule": 1}}\n', "unknown label name"),
        "empty": ("e.csv", "volume\n", "no rows"),
    }
    for name, (fname, text, msg) in bad.items():
        (tmp_path / fname).write_text(text)
        with pytest.raises(DatasetError, match=msg):
            load_manifest(tmp_path / fname)
        assert name
