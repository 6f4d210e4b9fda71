"""The fvlm objective with two CPU processes (gloo): the same loss, per-anatomy terms and gradients as one process
on the concatenated batch (the distributed fVLM loss gathers embeddings, flags and text ids across ranks)."""

from __future__ import annotations

import pytest
import torch

from helpers_distributed import assert_ranks_match, run_two_ranks, single_process
from radfinder.train.toy import make_toy_cohort, toy_train_config

pytestmark = pytest.mark.multiprocess


@pytest.mark.timeout(300)
def test_two_processes_match_one_process_for_fvlm(tmp_path):
    torch.set_num_threads(1)
    cohort = make_toy_cohort(tmp_path / "toy", 16, seed=9, anatomy=True)
    model = {"init": "tiny", "overrides": cohort["model_overrides"], "anatomy": {"dim": 16, "num_heads": 2}}
    common = {"precision": "fp64", "schedule": {"epochs": 1, "max_steps": 1}, "model": model,
              "losses": {"weights": {"fvlm": 1.0, "siglip": 1.0}, "b_init": -2.0},
              "distributed": {"backend": "gloo", "timeout_s": 120}}
    dist_cfg = toy_train_config(cohort, batch={"micro": 2, "accum": 2}, **common)
    one_cfg = toy_train_config(cohort, batch={"micro": 4, "accum": 2}, **common)  # same 8-sample global batch
    run_two_ranks(dist_cfg, tmp_path)
    ref_stats, ref_grads = single_process(one_cfg, tmp_path / "single")
    assert any(n.startswith("anatomy_head.") for n in ref_grads) and "anatomy_temperature.temperature" in ref_grads
    assert ref_stats["fvlm"] > 0
    assert_ranks_match(tmp_path, ref_stats, ref_grads,
                       ("loss", "fvlm", "fvlm/lung", "fvlm/heart", "fvlm/esophagus", "fvlm/aorta", "siglip"))
