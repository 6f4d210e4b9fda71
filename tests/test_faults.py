"""Faults: `kill -9` in the middle of a dataset job, then a rerun, loses and duplicates nothing; a disk that fills up
during a write leaves the previous file intact. (Training's kill -9 resume is tests/test_train_resume.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from radfinder.cli import main

N_SCANS = 14
N_FEATURE_SCANS = 8
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _scans(root: Path, n: int = N_SCANS) -> list[Path]:
    """Small CT-like NIfTIs (a water cylinder in air), each different."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(0)
    i, j = np.meshgrid(np.linspace(-1, 1, 96), np.linspace(-1, 1, 96), indexing="ij")
    for k in range(n):
        body = np.where(i**2 + j**2 < 0.5 + 0.02 * k, 40.0, -1000.0)[..., None] + rng.normal(0, 20, (96, 96, 48))
        aff = np.diag([0.9, 0.9, 2.0, 1.0])
        paths.append(root / f"scan_{k:02d}.nii.gz")
        nib.save(nib.Nifti1Image(body.astype(np.int16), aff), paths[-1])
    return paths


def _kill_when(cmd: list[str], ready, timeout: float = 240.0) -> int:
    """Start `cmd` in its own process group, SIGKILL the whole group (workers too) once `ready()` holds."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    err = proc.communicate(timeout=60)[1].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way (rc {proc.returncode}):\n{err[-2000:]}"
    return proc.returncode


@pytest.mark.timeout(600)
def test_preprocess_dataset_killed_mid_run_resumes_without_loss_or_duplicates(tmp_path, capsys):
    from radfinder.preprocess import load_preprocessed

    scans = _scans(tmp_path / "scans")
    out = tmp_path / "cache"
    cmd = [sys.executable, "-m", "radfinder", "preprocess-dataset", str(tmp_path / "scans"), "--out", str(out),
           "--workers", "2", "--json"]  # fmt: skip

    def entries() -> list[Path]:
        return sorted(out.glob("*/*.rfpre")) if out.is_dir() else []

    _kill_when(cmd, lambda: len(entries()) >= 3)
    before = {p.name: p.stat().st_mtime_ns for p in entries()}
    assert 3 <= len(before) < N_SCANS
    assert not list(out.glob("*/manifest*.json"))  # the manifest comes last: the run did not finish

    assert main(cmd[3:]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["written"], summary["cached"], summary["failed"]) == (N_SCANS - len(before), len(before), 0)
    after = entries()
    assert len(after) == N_SCANS
    assert all(p.stat().st_mtime_ns == before[p.name] for p in after if p.name in before)  # kept, not redone
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    (manifest,) = out.glob("*/manifest.json")
    names = [e["name"] for e in json.loads(manifest.read_text())["entries"]]
    assert sorted(names) == [f"scans/{s.name}" for s in scans]  # each scan exactly once

    # every entry equals what an uninterrupted run writes
    clean = tmp_path / "clean"
    assert main(["preprocess-dataset", str(tmp_path / "scans"), "--out", str(clean), "--json"]) == 0
    capsys.readouterr()
    ref = {p.name: p for p in clean.glob("*/*.rfpre")}
    assert ref.keys() == {p.name for p in after}
    for p in after:
        a, b = load_preprocessed(p), load_preprocessed(ref[p.name])
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.affine, b.affine)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from radfinder.models import RadFinderModel

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("faults_ckpt") / "tiny"
    RadFinderModel("tiny").eval().save_pretrained(path)
    return path


@pytest.mark.slow  # about 30 s on 2 busy cores: building the model and two processes importing torch
@pytest.mark.timeout(600)
def test_extract_features_killed_mid_run_resumes_without_loss_or_duplicates(tmp_path, tiny_checkpoint, capsys):
    from radfinder.features import FeatureStore

    scans = _scans(tmp_path / "scans", N_FEATURE_SCANS)
    out = tmp_path / "features"
    cmd = [sys.executable, "-m", "radfinder", "extract-features", str(tmp_path / "scans"), "--out", str(out),
           "--model", str(tiny_checkpoint), "--device", "cpu", "--json"]  # fmt: skip

    def records() -> list[Path]:
        return [p for p in out.glob("*") if p.is_file() and not p.name.startswith(".") and p.name != "cache.json"]

    _kill_when(cmd, lambda: len(records()) >= 2)
    before = {p.name: p.stat().st_mtime_ns for p in records()}
    assert 2 <= len(before) < N_FEATURE_SCANS

    torch.set_num_threads(1)
    assert main(cmd[3:]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["written"], summary["skipped_existing"], summary["failed"]) == (
        N_FEATURE_SCANS - len(before), len(before), {})
    store = FeatureStore.open(out)
    assert store.keys() == sorted(s.name.removesuffix(".nii.gz") for s in scans)
    assert all(p.stat().st_mtime_ns == before[p.name] for p in records() if p.name in before)

    # the records written before the kill equal those of an uninterrupted run
    clean = tmp_path / "clean"
    kept = [s for s in scans if any(name.startswith(s.name.removesuffix(".nii.gz") + ".") for name in before)]
    assert len(kept) == len(before)
    assert main(["extract-features", *map(str, kept), "--out", str(clean), *cmd[7:]]) == 0
    capsys.readouterr()
    ref = FeatureStore.open(clean)
    for key in ref.keys():
        a, b = store.read(key), ref.read(key)
        for name in ("cls", "patch_average", "axis2", "affine"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-6, err_msg=key)


# ---------------------------------------------------------------- a full disk

FULL_DISK_SCRIPT = textwrap.dedent(
    """
    import errno, json, os, sys
    from pathlib import Path

    import numpy as np

    root = Path(sys.argv[1])
    results = {}

    def fill(d):
        fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT)  # take every free byte
        try:
            for size in (65536, 4096, 512, 1):
                try:
                    while True:
                        os.write(fd, b"\\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)

    def attempt(name, path, write_old, write_new):
        d = path.parent
        write_old()
        old = path.read_bytes()
        fill(root)
        try:
            write_new()
            outcome = "written"
        except OSError as exc:
            outcome = "ENOSPC" if exc.errno == errno.ENOSPC else repr(exc)
        except Exception as exc:  # a library may wrap the OSError
            outcome = "ENOSPC" if "No space" in str(exc) or "ENOSPC" in str(exc) else repr(exc)
        results[name] = {
            "outcome": outcome,
            "previous_intact": path.read_bytes() == old,
            "leftovers": sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp") or ".tmp" in p.name),
        }
        (root / "filler").unlink()

    from radfinder.preprocess.cache import atomic_write_bytes
    (root / "cache").mkdir()
    p = root / "cache" / "entry.rfpre"
    attempt("preprocess cache entry", p, lambda: atomic_write_bytes(p, b"old" * 1000),
            lambda: atomic_write_bytes(p, os.urandom(300_000)))

    from radfinder.features.store import FeatureRecord, FeatureStore
    from radfinder.preprocess.spec import PreprocessSpec
    store = FeatureStore(root / "features", PreprocessSpec(), {"hash": "x"}, 16)
    def rec(grid):  # random floats: zstd cannot shrink them, so the 8^3 grid needs more than the disk has
        r = np.random.default_rng(grid)
        return FeatureRecord(key="a", cls=r.random((grid, grid, grid, 16), np.float32),
                             patch_average=r.random((grid, grid, grid, 16), np.float32),
                             axis2=r.random((grid, grid, grid, 8, 16), np.float32), affine=np.eye(4))
    attempt("feature record", store.path_of("a"), lambda: store.write(rec(1)), lambda: store.write(rec(8)))

    from radfinder.eval.report import write_metrics_json
    m = root / "eval" / "metrics.json"
    m.parent.mkdir()
    attempt("metrics.json", m, lambda: write_metrics_json(m, {"a": 1}),
            lambda: write_metrics_json(m, {"a": "x" * 400_000}))

    print(json.dumps(results))
    """
)


def test_a_full_disk_during_a_write_leaves_the_previous_file_intact(tmp_path):
    """A 256 kB tmpfs in a private mount namespace (skipped where unprivileged namespaces or tmpfs are refused)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to mount a private tmpfs")
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK_SCRIPT)
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=256k tmpfs {mnt}"],
                           capture_output=True, text=True)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.strip()}")
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=256k tmpfs "{mnt}" && exec "{sys.executable}" '
         f'"{script}" "{mnt}"'],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(results) == {"preprocess cache entry", "feature record", "metrics.json"}
    for name, r in results.items():
        assert r["outcome"] == "ENOSPC", (name, r)
        assert r["previous_intact"], (name, r)
        assert r["leftovers"] == [], (name, r)
