"""Kill a training run with SIGKILL after a checkpoint, resume it, and compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from radfinder.cli import main
from radfinder.config import dump_config
from radfinder.train import train
from radfinder.train.toy import make_toy_cohort, toy_train_config

KILL_AFTER = 6
COMPARED = ("loss", "siglip", "prompt", "localization", "lr", "t", "b", "grad_norm", "negatives", "snippets")


def _log(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.timeout(600)
def test_sigkill_then_resume_is_bit_exact(tmp_path):
    torch.set_num_threads(1)  # same thread count as the subprocess: float reductions depend on it
    cohort = make_toy_cohort(tmp_path / "toy", 24, seed=5)
    cfg = toy_train_config(cohort, batch={"micro": 2, "accum": 2}, schedule={"epochs": 4},
                           checkpoint={"every_steps": 3, "keep_last": 10})
    yaml_path = tmp_path / "train.yaml"
    dump_config(cfg, yaml_path)

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "radfinder", "train", "--config", str(yaml_path), "--out",
                             str(killed), "--json"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pointer = killed / "checkpoints" / "latest"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        if pointer.is_file() and pointer.read_text().strip() >= f"step-{KILL_AFTER:08d}":
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    err = proc.communicate(timeout=60)[1].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"run was not killed mid-training (rc {proc.returncode}):\n{err[-2000:]}"
    logged_before = _log(killed / "log.jsonl")
    total_steps = 4 * (24 // 4)
    assert len(logged_before) < total_steps

    assert main(["train", "--config", str(yaml_path), "--out", str(killed), "--resume", "--json"]) == 0
    resumed = _log(killed / "log.jsonl")

    reference = tmp_path / "uninterrupted"
    train(cfg, reference)
    expected = _log(reference / "log.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, total_steps + 1))
    for got, want in zip(resumed, expected, strict=True):
        for key in COMPARED:
            assert got[key] == want[key], f"step {want['step']}: {key} {got[key]!r} != {want[key]!r}"
    # the resumed run's final weights equal the uninterrupted run's, bit for bit
    from safetensors.torch import load_file

    name = f"step-{total_steps:08d}/model/model.safetensors"
    a = load_file(str(killed / "checkpoints" / name))
    b = load_file(str(reference / "checkpoints" / name))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
