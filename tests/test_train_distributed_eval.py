"""Evaluation under DDP (two gloo CPU processes): rank-0 hooks never leave the other ranks in a different collective,
and a collective that waits too long ends the job with a message naming the rank, the operation and the timeout.

Before the fix, `torchrun --nproc-per-node 2 -m radfinder train` with `eval.at_end: true` trained every step and then
hung: rank 0 evaluated and waited in a barrier while rank 1 (which held no hooks) went on to the checkpoint's gather.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from helpers_distributed import join_env, rendezvous_file
from radfinder.config import dump_config
from radfinder.train.config import TrainConfig
from radfinder.train.toy import make_toy_cohort, toy_train_config

pytestmark = pytest.mark.multiprocess


def _eval_config(tmp_path, **overrides) -> tuple[TrainConfig, dict]:
    cohort = make_toy_cohort(tmp_path / "toy", 16, seed=7)
    held_out = {"kind": "manifest", "root": cohort["manifest"], "split": "train", "features": cohort["features"],
                "name": "toy"}  # the toy cohort has one split: this checks the plumbing, not a metric
    section = {"batch": {"micro": 2, "accum": 1}, "schedule": {"epochs": 1, "max_steps": 2},
               "distributed": {"backend": "gloo", "timeout_s": 60},
               "eval": {"at_end": True, "retrieval": {"dataset": held_out, "ks": [1, 5]}}}
    section.update(overrides)
    return toy_train_config(cohort, **section), cohort


@pytest.mark.timeout(300)
def test_torchrun_trains_and_evaluates_to_the_end(tmp_path):
    cfg, _ = _eval_config(tmp_path, checkpoint={"every_steps": 1})
    path = tmp_path / "train.yaml"
    dump_config(cfg, path)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         "-m", "radfinder", "train", "--config", str(path), "--out", str(tmp_path / "run"), "--json"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 2
    assert summary["eval"]["eval/retrieval/n"] == 16.0
    lines = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    assert "eval/retrieval/R@1" not in lines[0]
    assert lines[1]["eval/retrieval/R@1"] == summary["eval"]["eval/retrieval/R@1"]
    assert (tmp_path / "run/checkpoints/step-00000002/model/model.safetensors").is_file()


def _hook_worker(rank: int, world: int, rendezvous: str, cfg_json: str, out_root: str, mode: str) -> None:
    """mode "collective": a hook that calls a collective (it must run as if alone); mode "slow": a rank-0 hook that
    outlasts the process group's timeout (rank 1 must end with a clear message, not wait forever)."""
    from radfinder.errors import RadfinderError
    from radfinder.losses.collectives import all_gather_no_grad
    from radfinder.train.trainer import Trainer

    join_env(rank, world, rendezvous)
    torch.set_num_threads(1)

    def gathering_hook(ctx):
        rows = all_gather_no_grad(torch.ones(3, 1))  # with the other rank in it, this would hang or mismatch
        return {"hook/rows": float(rows.shape[0]), "hook/step": float(ctx.step)}

    def slow_hook(ctx):
        # outlast rank 1's wait for sure, however late rank 1 arrives: return only once it has given up (its
        # result file exists); the deadline only bounds a broken run
        deadline = time.monotonic() + 240
        while not os.path.exists(os.path.join(out_root, "slow1.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"hook/slept": 1.0}

    cfg = TrainConfig.model_validate_json(cfg_json)
    hook = gathering_hook if mode == "collective" else slow_hook
    result: dict = {}
    try:
        res = Trainer(cfg, os.path.join(out_root, "run"), hooks=[hook], show_progress=False).run()
        result = {"ok": True, "eval": res.eval, "steps": res.steps}
    except RadfinderError as exc:
        result = {"ok": False, "type": type(exc).__name__, "message": str(exc)}
    with open(os.path.join(out_root, f"{mode}{rank}.json"), "w") as fh:
        json.dump(result, fh)


@pytest.mark.timeout(300)
def test_rank0_hooks_run_alone_and_every_rank_gets_their_results(tmp_path):
    cfg, _ = _eval_config(tmp_path, eval={"every_steps": 1, "at_end": True})
    mp.spawn(_hook_worker, args=(2, rendezvous_file(tmp_path), cfg.model_dump_json(), str(tmp_path), "collective"),
             nprocs=2, join=True)  # fmt: skip
    got = [json.loads((tmp_path / f"collective{r}.json").read_text()) for r in (0, 1)]
    assert got[0]["ok"] and got[1]["ok"], got
    assert got[0]["eval"] == {"hook/rows": 3.0, "hook/step": 2.0}  # 3 rows: the gather ran as a single process
    assert got[1]["eval"] == got[0]["eval"]  # rank 1 receives rank 0's results
    lines = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [x.get("hook/step") for x in lines] == [1.0, 2.0]


@pytest.mark.timeout(300)
def test_a_wait_past_the_timeout_ends_the_job_with_a_message(tmp_path):
    cfg, _ = _eval_config(tmp_path, distributed={"backend": "gloo", "timeout_s": 4})
    mp.spawn(_hook_worker, args=(2, rendezvous_file(tmp_path), cfg.model_dump_json(), str(tmp_path), "slow"), nprocs=2,
             join=True)  # fmt: skip
    waiting = json.loads((tmp_path / "slow1.json").read_text())
    assert waiting["ok"] is False and waiting["type"] == "DistributedError", waiting
    assert waiting["message"].startswith("rank 1/2: waiting for rank 0's evaluation after step 2: ")
    assert "within 4 s (distributed.timeout_s)" in waiting["message"]
    evaluator = json.loads((tmp_path / "slow0.json").read_text())
    assert evaluator["ok"] is False and evaluator["type"] == "DistributedError", evaluator
    assert evaluator["message"].startswith("rank 0/2: ")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_torchrun_with_the_demo_training_config_evaluates_to_the_end(tmp_path):
    """The issue's reproduction: `radfinder demo --stop-after features`, then configs/train/demo.yaml under
    torchrun with eval.at_end (a small cohort, so the batch and epochs are lowered; paths resolve as in the repo).
    Mismatched gloo collectives are undefined behaviour: on this small cohort the old code sometimes finished by
    accident, so the regression test is `test_torchrun_trains_and_evaluates_to_the_end`, which hung every time."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    demo = subprocess.run([sys.executable, "-m", "radfinder", "demo", "--out", str(tmp_path / "demo-out"), "--studies",
                           "16", "--workers", "1", "--stop-after", "features", "--json"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    config = tmp_path / "configs/train/demo.yaml"  # ../../demo-out in the config then points at our demo output
    config.parent.mkdir(parents=True)
    config.write_text((root / "configs/train/demo.yaml").read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         "-m", "radfinder", "train", "--config", str(config), "--out", str(tmp_path / "runs/demo"), "--json",
         "--set", "batch.micro=4", "--set", "schedule.epochs=2", "--set", "distributed.timeout_s=120"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["steps"] == summary["total_steps"] and summary["eval"]["eval/retrieval/n"] > 0
    assert summary["pairs"]["datasets"]["synthetic"]["kept"] > 0
