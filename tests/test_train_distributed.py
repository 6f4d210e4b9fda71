"""Two CPU processes (gloo): same loss and gradients as one process on the concatenated batch, rank-0-only
outputs, and a crashed rank ends the job with a clear message instead of a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from helpers_distributed import assert_ranks_match, run_two_ranks, single_process
from radfinder.config import dump_config
from radfinder.train.toy import make_toy_cohort, toy_train_config

pytestmark = pytest.mark.multiprocess


@pytest.mark.timeout(300)
def test_two_processes_match_one_process_on_the_concatenated_batch(tmp_path):
    torch.set_num_threads(1)
    cohort = make_toy_cohort(tmp_path / "toy", 16, seed=7)
    common = {"precision": "fp64", "schedule": {"epochs": 1, "max_steps": 2}, "checkpoint": {"every_steps": 1},
              "distributed": {"backend": "gloo", "timeout_s": 120}}
    dist_cfg = toy_train_config(cohort, batch={"micro": 2, "accum": 2}, **common)
    one_cfg = toy_train_config(cohort, batch={"micro": 4, "accum": 2}, **common)  # same 8-sample global batch

    run_two_ranks(dist_cfg, tmp_path, then_run=True)  # two full steps afterwards, a checkpoint after each

    ref_stats, ref_grads = single_process(one_cfg, tmp_path / "single")
    for rank in (0, 1):
        stats = json.loads((tmp_path / f"stats{rank}.json").read_text())
        assert stats["n_samples"] == 8 and stats["negatives"] == 7
    assert_ranks_match(tmp_path, ref_stats, ref_grads, ("loss", "siglip", "prompt", "localization"))

    assert not (tmp_path / "run1").exists(), "rank 1 wrote outputs"
    lines = [json.loads(x) for x in (tmp_path / "run0/log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    assert (tmp_path / "run0/checkpoints/step-00000002/model/model.safetensors").is_file()


@pytest.mark.timeout(300)
def test_crashed_rank_ends_the_job_with_a_message(tmp_path):
    cohort = make_toy_cohort(tmp_path / "toy", 16, seed=7)
    cfg = toy_train_config(cohort, batch={"micro": 2, "accum": 1}, schedule={"epochs": 1},
                           distributed={"backend": "gloo", "timeout_s": 30})
    path = tmp_path / "train.yaml"
    dump_config(cfg, path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RADFINDER_TRAIN_FAIL": "1:1"}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         "-m", "radfinder", "train", "--config", str(path), "--out", str(tmp_path / "run"), "--json"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    assert "rank 1: injected failure at step 1" in proc.stderr
    assert elapsed < 200
    # rank 0 trained step 0 with rank 1 before the failure
    lines = (tmp_path / "run/log.jsonl").read_text().splitlines()
    assert len(lines) == 1
