"""Multi-process checks (2 gloo processes): the fVLM loss and the soft-target contrastive loss equal one process on
the concatenated batch, in value, per-anatomy terms and gradients w.r.t. each rank's local embeddings."""

from __future__ import annotations

import pytest

import distributed_workers_anatomy as workers
from test_distributed_losses import TIMEOUT_S, _spawn


@pytest.mark.multiprocess
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_fvlm_distributed_equals_single_process(tmp_path):
    _spawn(workers.fvlm_worker, tmp_path)


@pytest.mark.multiprocess
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_soft_contrastive_distributed_equals_single_process(tmp_path):
    _spawn(workers.soft_contrastive_worker, tmp_path)
