"""Two CPU processes (gloo): same loss and gradients as one process on the concatenated batch, rank-0-only
outputs, and a crashed rank ends the job with a clear message instead of a hang."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from radfinder.config import dump_config
from radfinder.train.config import TrainConfig
from radfinder.train.toy import make_toy_cohort, toy_train_config
from radfinder.train.trainer import Trainer

pytestmark = pytest.mark.multiprocess


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg_json: str, out_root: str) -> None:
    from safetensors.torch import save_file

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    cfg = TrainConfig.model_validate_json(cfg_json)
    tr = Trainer(cfg, os.path.join(out_root, f"run{rank}"), show_progress=False)
    stats = tr.compute_gradients(0)
    grads = {n: p.grad.detach().clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    save_file(grads, os.path.join(out_root, f"grads{rank}.safetensors"))
    with open(os.path.join(out_root, f"stats{rank}.json"), "w") as fh:
        json.dump(stats.as_dict(), fh)
    tr.optimizer.zero_grad(set_to_none=True)
    tr.run()  # two full steps with a checkpoint after each: outputs must come from rank 0 only


@pytest.mark.timeout(300)
def test_two_processes_match_one_process_on_the_concatenated_batch(tmp_path):
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    cohort = make_toy_cohort(tmp_path / "toy", 16, seed=7)
    common = {"precision": "fp64", "schedule": {"epochs": 1, "max_steps": 2}, "checkpoint": {"every_steps": 1},
              "distributed": {"backend": "gloo", "timeout_s": 120}}
    dist_cfg = toy_train_config(cohort, batch={"micro": 2, "accum": 2}, **common)
    one_cfg = toy_train_config(cohort, batch={"micro": 4, "accum": 2}, **common)  # same 8-sample global batch

    mp.spawn(_worker, args=(2, _free_port(), dist_cfg.model_dump_json(), str(tmp_path)), nprocs=2, join=True)

    ref = Trainer(one_cfg, tmp_path / "single", show_progress=False)
    ref_stats = ref.compute_gradients(0)
    ref_grads = {n: p.grad for n, p in ref.model.named_parameters() if p.grad is not None}
    for rank in (0, 1):
        stats = json.loads((tmp_path / f"stats{rank}.json").read_text())
        assert stats["n_samples"] == 8 and stats["negatives"] == 7
        for key in ("loss", "siglip", "prompt", "localization"):
            assert stats[key] == pytest.approx(getattr(ref_stats, key), rel=1e-10, abs=1e-12), key
        grads = load_file(str(tmp_path / f"grads{rank}.safetensors"))
        assert set(grads) == set(ref_grads)
        for n, g in ref_grads.items():
            torch.testing.assert_close(grads[n], g, rtol=1e-9, atol=1e-12,
                                       msg=lambda m, n=n, r=rank: f"rank {r} {n}: {m}")

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
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
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
