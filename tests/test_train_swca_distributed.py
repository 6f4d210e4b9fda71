"""swca under DDP: 2 gloo processes give the single-process loss and gradients on the concatenated batch (its soft
targets are built from the labels of the whole global batch)."""

from __future__ import annotations

import pytest
import torch

from helpers_distributed import assert_ranks_match, run_two_ranks, single_process
from radfinder.train.toy import make_toy_cohort, toy_train_config

pytestmark = pytest.mark.multiprocess


@pytest.mark.timeout(300)
def test_swca_two_processes_match_one_process(tmp_path):
    torch.set_num_threads(1)
    cohort = make_toy_cohort(tmp_path / "toy", 16, seed=7)
    common = {"precision": "fp64", "schedule": {"epochs": 1, "max_steps": 1},
              "distributed": {"backend": "gloo", "timeout_s": 120},
              "losses": {"b_init": -2.0, "weights": {"swca": 1.0, "prompt": 8.0},
                         "options": {"swca": {"alpha": 0.5, "beta": 0.5, "gamma": 0.5,
                                                   "volume_weight": 0.5, "intra_weight": 0.3}}}}
    dist_cfg = toy_train_config(cohort, batch={"micro": 2, "accum": 2}, **common)
    one_cfg = toy_train_config(cohort, batch={"micro": 4, "accum": 2}, **common)
    run_two_ranks(dist_cfg, tmp_path)
    ref_stats, ref_grads = single_process(one_cfg, tmp_path / "single")
    assert ref_stats["swca"] > 0
    assert_ranks_match(tmp_path, ref_stats, ref_grads, ("loss", "swca", "prompt"))
