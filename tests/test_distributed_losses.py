"""Multi-process checks (2 gloo processes): distributed SigLIP and DDP gradient caching equal one process on the
concatenated batch, in value and in the gradients w.r.t. each rank's local embeddings."""

from __future__ import annotations

import time

import pytest
import torch.multiprocessing as mp

import distributed_workers as workers

WORLD = 2
TIMEOUT_S = 120


def _spawn(fn, tmp_path, world: int = WORLD, timeout_s: float = TIMEOUT_S) -> None:
    ctx = mp.start_processes(fn, args=(world, str(tmp_path / "rendezvous")), nprocs=world, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout_s
    # join() re-raises a worker's exception (and stops the others); a hang ends at the deadline instead
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.kill()
            pytest.fail(f"{fn.__name__} did not finish within {timeout_s} s (collective hang?)")


@pytest.mark.multiprocess
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_siglip_gather_and_ring_equal_single_process(tmp_path):
    _spawn(workers.siglip_worker, tmp_path)


@pytest.mark.multiprocess
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_init_distributed_and_autograd_collectives(tmp_path, monkeypatch):
    # init_distributed's own rendezvous, through a file instead of a port found by bind-and-close (which another
    # process can take between the probe and the bind)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.setenv("RADFINDER_DIST_INIT_METHOD", f"file://{tmp_path / 'init-rendezvous'}")
    _spawn(workers.gather_impl_worker, tmp_path)


@pytest.mark.multiprocess
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_gradcache_under_ddp_equals_big_batch(tmp_path):
    _spawn(workers.gradcache_ddp_worker, tmp_path)
