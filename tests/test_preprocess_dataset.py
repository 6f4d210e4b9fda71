"""preprocess-dataset: discovery, shards, failures, resume after interruption, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from radfinder.cli import main
from radfinder.preprocess import (
    PreprocessSpec,
    discover_sources,
    load_preprocessed,
    preprocess_dataset,
    read_list_file,
    shard_of,
)

SPEC = PreprocessSpec(window=(16, 16, 8), depth_tokens_per_window=2)


def _nifti(path, seed=0, shape=(20, 18, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(-1024, 1500, size=shape).astype(np.int16)
    nib.save(nib.Nifti1Image(arr, np.diag([-1.1, -1.2, 2.5, 1.0])), str(path))
    return path


def _fake_dicom(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)


def _dataset(root, n=7):
    return [_nifti(root / ("sub" if i % 2 else "") / f"ct{i:02d}.nii.gz", seed=i) for i in range(n)]


def test_discovery_of_nifti_folders_dicom_studies_and_lists(tmp_path):
    files = _dataset(tmp_path / "nii")
    (tmp_path / "nii" / "notes.txt").write_text("ignored")
    _fake_dicom(tmp_path / "dcm" / "study1" / "series_a" / "IM0001")
    _fake_dicom(tmp_path / "dcm" / "study1" / "series_b" / "1.dcm")
    _fake_dicom(tmp_path / "dcm" / "study2" / "IM0001")
    (tmp_path / "dcm" / "empty").mkdir()
    found = discover_sources([tmp_path / "nii", tmp_path / "dcm"])
    paths = {s.path for s in found}
    assert paths == set(files) | {tmp_path / "dcm" / "study1", tmp_path / "dcm" / "study2"}
    names = [s.name for s in found]
    assert names == sorted(names) and "nii/sub/ct01.nii.gz" in names and "dcm/study2" in names
    # a single series folder given directly is one source; duplicates collapse
    assert [s.path for s in discover_sources([tmp_path / "dcm" / "study2", tmp_path / "dcm" / "study2"])] == [
        tmp_path / "dcm" / "study2"
    ]
    lst = tmp_path / "list.txt"
    lst.write_text(f"# my cohort\nnii/ct00.nii.gz\n\n{files[1]}\n")
    assert read_list_file(lst) == [tmp_path / "nii" / "ct00.nii.gz", files[1]]


def test_shards_partition_the_dataset(tmp_path):
    _dataset(tmp_path / "nii", n=10)
    sources = discover_sources([tmp_path / "nii"])
    for n in (1, 3, 4):
        parts = [shard_of(sources, (i, n)) for i in range(n)]
        flat = [s.path for p in parts for s in p]
        assert sorted(flat) == sorted(s.path for s in sources) and len(flat) == len(set(flat))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    # the same split comes out whatever order the inputs were listed in
    shuffled = list(reversed(sources))
    assert [s.path for s in shard_of(shuffled, (1, 3))] == [s.path for s in shard_of(sources, (1, 3))]
    # three "machines" write disjoint manifests that together list every volume once
    out = tmp_path / "cache"
    for i in range(3):
        assert (
            main(
                [
                    "preprocess-dataset",
                    str(tmp_path / "nii"),
                    "--out",
                    str(out),
                    "--shard",
                    f"{i}/3",
                    "--spec",
                    _spec_file(tmp_path),
                    "--json",
                ]
            )
            == 0
        )
    listed = []
    for i in range(3):
        man = json.loads((out / SPEC.hash() / f"manifest.shard-{i}-of-3.json").read_text())
        listed += [e["source"] for e in man["entries"]]
    assert sorted(listed) == sorted(str(s.path) for s in sources)
    assert len(list((out / SPEC.hash()).glob("*.rfpre"))) == 10


def _spec_file(tmp_path):
    path = tmp_path / "spec.yaml"
    if not path.exists():
        SPEC.save(path)  # JSON is valid YAML
    return str(path)


def test_corrupt_input_is_reported_and_the_rest_succeeds(tmp_path, capsys):
    _dataset(tmp_path / "nii", n=4)
    (tmp_path / "nii" / "broken.nii.gz").write_bytes(b"\x1f\x8bthis is not a nifti")
    rc = main(
        [
            "preprocess-dataset",
            str(tmp_path / "nii"),
            "--out",
            str(tmp_path / "c"),
            "--spec",
            _spec_file(tmp_path),
            "--json",
        ]
    )
    assert rc == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 4 and summary["failed"] == 1 and summary["found"] == 5
    assert "broken.nii.gz" in summary["failures"][0]["source"]
    failures = json.loads((tmp_path / "c" / SPEC.hash() / "failures.json").read_text())
    assert [f["name"] for f in failures] == ["nii/broken.nii.gz"] and failures[0]["error"]
    manifest = json.loads((tmp_path / "c" / SPEC.hash() / "manifest.json").read_text())
    assert len(manifest["entries"]) == 4 and manifest["spec"] == SPEC.model_dump(mode="json")
    for e in manifest["entries"]:
        assert load_preprocessed(tmp_path / "c" / SPEC.hash() / e["file"]).grid == tuple(e["grid"])


def test_resume_skips_finished_entries_and_ignores_stale_tmp(tmp_path):
    files = _dataset(tmp_path / "nii", n=5)
    sources = discover_sources([tmp_path / "nii"])
    rep = preprocess_dataset(sources, tmp_path / "c", SPEC, show_progress=False)
    assert len(rep.written) == 5 and rep.ok
    spec_dir = tmp_path / "c" / SPEC.hash()
    entries = sorted(spec_dir.glob("*.rfpre"))
    # simulate a run killed while writing one entry: its final file is missing, a partial tmp is left behind
    victim = entries[2]
    victim.unlink()
    stale = spec_dir / f".{victim.name}.otherhost.1234.tmp"
    stale.write_bytes(b"partial")
    rep2 = preprocess_dataset(sources, tmp_path / "c", SPEC, show_progress=False)
    assert [r["file"] for r in rep2.written] == [victim.name] and len(rep2.cached) == 4
    assert not stale.exists() and victim.is_file()
    load_preprocessed(victim, expect_spec=SPEC)
    # a modified source gets a fresh entry; the old one is left alone
    _nifti(files[0], seed=99)
    st = files[0].stat()
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rep3 = preprocess_dataset(sources, tmp_path / "c", SPEC, show_progress=False)
    assert len(rep3.written) == 1 and len(rep3.cached) == 4


def test_single_volume_cli_writes_npz(tmp_path, capsys):
    src = _nifti(tmp_path / "ct.nii.gz", seed=3)
    out = tmp_path / "o" / "ct.npz"
    assert main(["preprocess", str(src), "--out", str(out), "--spec", _spec_file(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    z = np.load(out)
    assert z["image"].dtype == np.float16 and list(z["image"].shape) == info["shape"]
    assert list(z["grid"]) == info["grid"] and str(z["spec_hash"]) == SPEC.hash()
    assert PreprocessSpec.model_validate_json(str(z["spec"])) == SPEC
    assert z["affine"].shape == (4, 4) and info["source_orientation"] == "LPS"
    assert main(["preprocess", str(tmp_path / "missing.nii.gz"), "--out", str(out)]) == 2


@pytest.mark.multiprocess
@pytest.mark.timeout(240)
def test_killed_parallel_run_leaves_no_corrupt_entry_and_resumes(tmp_path):
    for i in range(16):
        _nifti(tmp_path / "nii" / f"ct{i:02d}.nii.gz", seed=i, shape=(120, 110, 60))
    spec = tmp_path / "spec.json"
    PreprocessSpec(window=(32, 32, 8), depth_tokens_per_window=2).save(spec)
    spec_hash = PreprocessSpec.load(spec).hash()
    cmd = [
        sys.executable,
        "-m",
        "radfinder",
        "preprocess-dataset",
        str(tmp_path / "nii"),
        "--out",
        str(tmp_path / "c"),
        "--spec",
        str(spec),
        "--workers",
        "2",
        "--json",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    spec_dir = tmp_path / "c" / spec_hash
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and len(list(spec_dir.glob("*.rfpre"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run: parent and its workers, mid-write if it happens
    proc.wait()
    done = sorted(spec_dir.glob("*.rfpre"))
    assert 0 < len(done) < 16, "the run should have been interrupted part way"
    for entry in done:
        load_preprocessed(entry)  # every entry that exists is complete
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["cached"] >= len(done) and summary["written"] + summary["cached"] == 16
    assert not list(spec_dir.glob(".*.tmp"))
    assert len(list(spec_dir.glob("*.rfpre"))) == 16


def test_dicom_study_folder_gives_the_same_image_as_its_nifti(tmp_path):
    from radfinder.io import write_dicom_series

    hu = np.random.default_rng(8).integers(-1000, 1400, size=(24, 20, 9)).astype(np.int16)
    affine = np.diag([-0.9, -0.8, 2.5, 1.0])
    affine[:3, 3] = (30.0, 20.0, -40.0)
    write_dicom_series(
        hu,
        affine,
        tmp_path / "dcm" / "study1" / "s1",
        series_number=1,
        study_uid="1.2.3",
        patient_id="p1",
        uid_seed="t",
    )
    (tmp_path / "nii").mkdir()
    nib.save(nib.Nifti1Image(hu, affine), str(tmp_path / "nii" / "ct.nii.gz"))
    rc = main(
        [
            "preprocess-dataset",
            str(tmp_path / "dcm"),
            str(tmp_path / "nii"),
            "--out",
            str(tmp_path / "c"),
            "--spec",
            _spec_file(tmp_path),
            "--json",
        ]
    )
    assert rc == 0
    entries = {
        e["name"]: e["file"]
        for e in json.loads((tmp_path / "c" / SPEC.hash() / "manifest.json").read_text())["entries"]
    }
    assert set(entries) == {"dcm/study1", "nii/ct.nii.gz"}
    a, b = (load_preprocessed(tmp_path / "c" / SPEC.hash() / entries[k]) for k in sorted(entries))
    # NIfTI stores the spacing in float32, DICOM as decimal text: sampling positions differ by ~1e-7 voxel,
    # which may move a value across a float16 rounding boundary, never more than one step.
    diff = np.abs(a.image.astype(np.float32) - b.image.astype(np.float32))
    assert diff.max() <= 1e-3 and (diff > 0).mean() < 0.01
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
