"""CT-RATE loader on the synthetic cohort (which writes the CT-RATE layout): splits, modes, labels, metadata,
patient-level dev split, no_chest and broken-volume filters, error messages."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers_data import synth_cohort, truth
from radfinder.data.ctrate import CTRATE_BROKEN_VOLUMES, is_known_broken, load_ctrate, parse_volume_name
from radfinder.data.records import DatasetError
from radfinder.text.findings import CTRATE_FINDINGS


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return synth_cohort(tmp_path_factory)


def _volumes(cohort: Path, split: str) -> dict[str, dict]:
    out = {}
    for s in truth(cohort):
        if s["split"] == split:
            for v in s["volumes"]:
                out[v["name"].removesuffix(".nii.gz")] = s
    return out


def _tables_copy(cohort: Path, tmp_path: Path) -> Path:
    """A CT-RATE root with copied tables and the volume folders linked (safe to edit the tables)."""
    src, dst = cohort / "dataset", tmp_path / "dataset"
    for sub in ("radiology_text_reports", "multi_abnormality_labels", "metadata"):
        shutil.copytree(src / sub, dst / sub)
    for sub in ("train_fixed", "valid_fixed"):
        (dst / sub).symlink_to(src / sub)
    return tmp_path


def test_dup_all_matches_truth(cohort):
    for split in ("train", "valid"):
        expected = _volumes(cohort, split)
        recs = load_ctrate(cohort, split, "dup_all")
        assert {r.key for r in recs} == set(expected)
        for r in recs:
            s = expected[r.key]
            assert Path(r.path).is_file() and r.split == split and r.dataset == "ct-rate"
            assert (r.patient, r.report_id) == (s["patient"], s["study"])
            assert r.findings == s["texts"]["en"]["Findings_EN"] and r.impressions == s["texts"]["en"]["Impressions_EN"]
            assert r.labels.dtype == np.float32
            assert r.labels.tolist() == [float(s["labels"][f]) for f in CTRATE_FINDINGS]


def test_first_all_keeps_lowest_reconstruction_per_report(cohort):
    dup = load_ctrate(cohort, "train", "dup_all")
    first = load_ctrate(cohort, "train", "first_all")
    assert len(dup) > len(first)  # the cohort has a study with two volumes
    assert sorted(r.report_id for r in first) == sorted({r.report_id for r in dup})
    for r in first:
        assert r.key.endswith("_1")


def test_metadata_join(cohort):
    rows = {}
    with open(cohort / "dataset" / "metadata" / "train_metadata.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rows[row["VolumeName"].removesuffix(".nii.gz")] = row
    for r in load_ctrate(cohort, "train", "dup_all"):
        row = rows[r.key]
        assert r.extra["RescaleSlope"] == float(row["RescaleSlope"])
        assert r.extra["RescaleIntercept"] == float(row["RescaleIntercept"])
        assert r.extra["ZSpacing"] == float(row["ZSpacing"])
        xy = [float(v) for v in row["XYSpacing"].strip("[]").split(",")]
        assert r.extra["XYSpacing"] == xy
        vol = r.load_volume()  # the metadata agrees with the file's geometry
        assert vol.spacing[0] == pytest.approx(xy[0], abs=1e-3)
        assert vol.spacing[2] == pytest.approx(r.extra["ZSpacing"], abs=1e-3)
    assert "RescaleSlope" not in load_ctrate(cohort, "train", "dup_all", metadata=False)[0].extra


def test_traindev_is_a_patient_level_partition(cohort):
    train = load_ctrate(cohort, "train", "dup_all")
    dev = load_ctrate(cohort, "traindev", "dup_all", dev_fraction=0.5, dev_seed=3)
    nodev = load_ctrate(cohort, "trainnodev", "dup_all", dev_fraction=0.5, dev_seed=3)
    assert sorted(r.key for r in dev + nodev) == sorted(r.key for r in train)
    assert not {r.patient for r in dev} & {r.patient for r in nodev}
    assert {r.split for r in dev} == {"traindev"} or not dev
    # the same seed gives the same split whatever the record order; explicit patients override the hash
    again = load_ctrate(cohort, "traindev", "dup_all", dev_fraction=0.5, dev_seed=3)
    assert [r.key for r in again] == [r.key for r in dev]
    patients = sorted({r.patient for r in train})
    chosen = load_ctrate(cohort, "traindev", "dup_all", dev_patients=[patients[0]])
    assert {r.patient for r in chosen} == {patients[0]}
    assert all(r.patient != patients[0] for r in load_ctrate(cohort, "trainnodev", dev_patients=[patients[0]]))
    assert load_ctrate(cohort, "traindev", dev_fraction=0.0) == []


def test_no_chest_filters(cohort, tmp_path):
    root = _tables_copy(cohort, tmp_path)
    dup = load_ctrate(root, "train", "dup_all")
    two = [r for r in dup if r.key.endswith("_2")][0]  # a study with two volumes
    (root / "dataset" / "metadata" / "no_chest_train.txt").write_text(f"{two.key}.nii.gz\n\n# comment\n")
    by_volume = load_ctrate(root, "train", "dup_all", no_chest="drop_volume")
    assert {r.key for r in by_volume} == {r.key for r in dup} - {two.key}
    by_study = load_ctrate(root, "train", "dup_all", no_chest="drop_study")
    assert {r.key for r in by_study} == {r.key for r in dup if r.report_id != two.report_id}
    assert len(load_ctrate(root, "train", "dup_all", no_chest="keep")) == len(dup)
    with pytest.warns(UserWarning, match="no_chest_valid.txt"):
        load_ctrate(root, "valid", no_chest="drop_volume")


def test_broken_volumes_are_skipped(cohort):
    assert is_known_broken("train_9792_a_3") and is_known_broken("train_1267_a_4")
    assert not is_known_broken("train_1267_a_1")
    assert "train_3821_a_5" in CTRATE_BROKEN_VOLUMES
    dup = load_ctrate(cohort, "train", "dup_all")
    victim = dup[0].report_id
    kept = load_ctrate(cohort, "train", "dup_all", broken=[f"{victim}_*"])
    assert {r.key for r in kept} == {r.key for r in dup if r.report_id != victim}
    assert len(load_ctrate(cohort, "train", "dup_all", broken=[f"{victim}_*"], skip_broken=False)) == len(dup)


def test_missing_volumes_warn_or_fail(cohort, tmp_path):
    root = _tables_copy(cohort, tmp_path)
    for sub in ("train_fixed", "valid_fixed"):
        (root / "dataset" / sub).unlink()
    shutil.copytree(cohort / "dataset" / "train_fixed", root / "dataset" / "train_fixed")
    victim = sorted((root / "dataset" / "train_fixed").rglob("*.nii.gz"))[0]
    victim.unlink()
    with pytest.warns(UserWarning, match="1 volumes listed in train_reports.csv are missing"):
        recs = load_ctrate(root, "train", "dup_all")
    assert victim.name.removesuffix(".nii.gz") not in {r.key for r in recs}
    everything = load_ctrate(root, "train", "dup_all", require_files=False)
    assert len(everything) == len(recs) + 1
    with pytest.raises(DatasetError, match="none of the .* volumes of split 'valid' exist"):
        load_ctrate(root, "valid")


def test_unfixed_folder_is_flagged_for_rescale(cohort, tmp_path):
    root = _tables_copy(cohort, tmp_path)
    (root / "dataset" / "train_fixed").rename(root / "dataset" / "train")
    recs = load_ctrate(root, "train", "dup_all")
    assert recs and all(r.extra["needs_rescale"] and "/train/" in r.path for r in recs)


def test_errors_name_the_file(cohort, tmp_path):
    with pytest.raises(DatasetError, match="not a CT-RATE layout"):
        load_ctrate(tmp_path)
    with pytest.raises(DatasetError, match="split must be one of"):
        load_ctrate(cohort, "test")
    with pytest.raises(DatasetError, match="mode must be"):
        load_ctrate(cohort, "valid", "all")
    root = _tables_copy(cohort, tmp_path / "c")
    reports = root / "dataset" / "radiology_text_reports" / "train_reports.csv"
    lines = reports.read_text().splitlines(keepends=True)
    reports.write_text("".join(lines + lines[1:2]))
    with pytest.raises(DatasetError, match=r"train_reports.csv: duplicate VolumeName"):
        load_ctrate(root, "train")
    reports.write_text("VolumeName,Findings_EN,Impressions_EN\nnot-a-name.nii.gz,a,b\n")
    with pytest.raises(DatasetError, match=r"train_reports.csv: not a CT-RATE volume name"):
        load_ctrate(root, "train")
    with pytest.raises(DatasetError, match="label table not found"):
        load_ctrate(cohort, "valid", labels_csv=tmp_path / "nope.csv")


def test_parse_volume_name():
    assert parse_volume_name("train_12_a_1.nii.gz") == ("train_12", "train_12_a", "1")
    with pytest.raises(DatasetError):
        parse_volume_name("train_12_a")
