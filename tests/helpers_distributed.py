"""Two-process (gloo) gradient checks shared by the DDP tests: each rank computes step 0's gradients of a training
config and saves them with its step statistics; the test compares them with one process on the concatenated batch
(`assert_ranks_match`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from distributed_workers import leave_without_teardown
from radfinder.train.config import TrainConfig
from radfinder.train.trainer import Trainer


def join_env(rank: int, world: int, rendezvous: str) -> None:
    """The torchrun environment of one spawned rank, with a file rendezvous (`RADFINDER_DIST_INIT_METHOD`) in place
    of MASTER_ADDR/MASTER_PORT: no port has to be probed free and then bound by someone else (a race)."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "RADFINDER_DIST_INIT_METHOD": f"file://{rendezvous}"})  # fmt: skip
    for k in ("MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(k, None)


def rendezvous_file(out_root: Path) -> str:
    """A fresh rendezvous file path for one job (torch's file store must not find a stale one)."""
    path = Path(out_root) / "rendezvous"
    if path.exists():
        path.unlink()
    return str(path)


def gradient_worker(rank: int, world: int, rendezvous: str, cfg_json: str, out_root: str, then_run: bool) -> None:
    """One rank: step 0's gradients and statistics into out_root/{grads,stats}<rank>; `then_run` also trains the
    whole schedule afterwards (outputs must come from rank 0 only)."""
    from safetensors.torch import save_file

    from radfinder.train.distributed import cleanup

    join_env(rank, world, rendezvous)
    torch.set_num_threads(1)
    tr = Trainer(TrainConfig.model_validate_json(cfg_json), os.path.join(out_root, f"run{rank}"), show_progress=False)
    try:
        stats = tr.compute_gradients(0)
        grads = {n: p.grad.detach().clone() for n, p in tr.model.named_parameters() if p.grad is not None}
        save_file(grads, os.path.join(out_root, f"grads{rank}.safetensors"))
        with open(os.path.join(out_root, f"stats{rank}.json"), "w") as fh:
            json.dump(stats.as_dict(), fh)
        if then_run:
            tr.optimizer.zero_grad(set_to_none=True)
            tr.run()
    except BaseException:
        cleanup()
        raise
    leave_without_teardown()  # the gloo group's teardown can abort a finished rank on a loaded machine


def run_two_ranks(cfg: TrainConfig, out_root: Path, then_run: bool = False) -> None:
    Path(out_root).mkdir(parents=True, exist_ok=True)
    mp.spawn(gradient_worker, args=(2, rendezvous_file(out_root), cfg.model_dump_json(), str(out_root), then_run),
             nprocs=2, join=True)  # fmt: skip


def single_process(cfg: TrainConfig, out: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(step statistics, parameter gradients) of step 0 in this process."""
    ref = Trainer(cfg, out, show_progress=False)
    stats = ref.compute_gradients(0).as_dict()
    return stats, {n: p.grad for n, p in ref.model.named_parameters() if p.grad is not None}


def assert_ranks_match(out_root: Path, ref_stats: dict, ref_grads: dict[str, torch.Tensor], keys) -> None:
    """Every rank's statistics `keys` and every parameter gradient equal the single-process ones (float64)."""
    from safetensors.torch import load_file

    for rank in (0, 1):
        stats = json.loads((out_root / f"stats{rank}.json").read_text())
        for key in keys:
            assert stats[key] == pytest.approx(ref_stats[key], rel=1e-10, abs=1e-12), (rank, key)
        grads = load_file(str(out_root / f"grads{rank}.safetensors"))
        assert set(grads) == set(ref_grads)
        for n, g in ref_grads.items():
            torch.testing.assert_close(grads[n], g, rtol=1e-9, atol=1e-12,
                                       msg=lambda m, n=n, r=rank: f"rank {r} {n}: {m}")  # fmt: skip
