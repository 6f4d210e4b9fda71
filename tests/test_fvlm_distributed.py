"""The fvlm objective with two CPU processes (gloo): the same loss, per-anatomy terms and gradients as one process
on the concatenated batch (the distributed fVLM loss gathers embeddings, flags and text ids across ranks)."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

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
    tr = Trainer(TrainConfig.model_validate_json(cfg_json), os.path.join(out_root, f"run{rank}"),
                 show_progress=False)
    stats = tr.compute_gradients(0)
    grads = {n: p.grad.detach().clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    save_file(grads, os.path.join(out_root, f"grads{rank}.safetensors"))
    with open(os.path.join(out_root, f"stats{rank}.json"), "w") as fh:
        json.dump(stats.as_dict(), fh)
    tr.optimizer.zero_grad(set_to_none=True)
    from radfinder.train.distributed import cleanup

    cleanup()


@pytest.mark.timeout(300)
def test_two_processes_match_one_process_for_fvlm(tmp_path):
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    cohort = make_toy_cohort(tmp_path / "toy", 16, seed=9, anatomy=True)
    model = {"init": "tiny", "overrides": cohort["model_overrides"], "anatomy": {"dim": 16, "num_heads": 2}}
    common = {"precision": "fp64", "schedule": {"epochs": 1, "max_steps": 1}, "model": model,
              "losses": {"weights": {"fvlm": 1.0, "siglip": 1.0}, "b_init": -2.0},
              "distributed": {"backend": "gloo", "timeout_s": 120}}
    dist_cfg = toy_train_config(cohort, batch={"micro": 2, "accum": 2}, **common)
    one_cfg = toy_train_config(cohort, batch={"micro": 4, "accum": 2}, **common)  # same 8-sample global batch
    mp.spawn(_worker, args=(2, _free_port(), dist_cfg.model_dump_json(), str(tmp_path)), nprocs=2, join=True)

    ref = Trainer(one_cfg, tmp_path / "single", show_progress=False)
    ref_stats = ref.compute_gradients(0).as_dict()
    ref_grads = {n: p.grad for n, p in ref.model.named_parameters() if p.grad is not None}
    assert any(n.startswith("anatomy_head.") for n in ref_grads) and "anatomy_temperature.temperature" in ref_grads
    assert ref_stats["fvlm"] > 0
    for rank in (0, 1):
        stats = json.loads((tmp_path / f"stats{rank}.json").read_text())
        for key in ("loss", "fvlm", "fvlm/lung", "fvlm/heart", "fvlm/esophagus", "fvlm/aorta", "siglip"):
            assert stats[key] == pytest.approx(ref_stats[key], rel=1e-10, abs=1e-12), key
        grads = load_file(str(tmp_path / f"grads{rank}.safetensors"))
        assert set(grads) == set(ref_grads)
        for n, g in ref_grads.items():
            torch.testing.assert_close(grads[n], g, rtol=1e-9, atol=1e-12,
                                       msg=lambda m, n=n, r=rank: f"rank {r} {n}: {m}")
