"""Process-group helpers without a process group, and their environment checks (no processes started)."""

from __future__ import annotations

import pytest
import torch

from radfinder.train import distributed as rd


@pytest.fixture
def clean_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "RADFINDER_DIST_INIT_METHOD"):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def test_single_process_defaults(clean_env):
    info = rd.init_distributed(backend="gloo")
    assert (info.rank, info.world_size, info.backend, info.is_main) == (0, 1, None, True)
    assert rd.rank() == 0 and rd.world_size() == 1 and rd.is_main_process() and not rd.is_distributed()
    rd.barrier()
    x = torch.randn(3, 2, requires_grad=True)
    assert rd.all_gather_with_grad(x) is x
    torch.testing.assert_close(rd.all_reduce_mean(x), x.detach())
    rd.cleanup()


def test_environment_errors(clean_env):
    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("RANK", "0")
    with pytest.raises(rd.DistributedError, match="MASTER_ADDR, MASTER_PORT"):
        rd.init_distributed(backend="gloo")
    clean_env.setenv("RANK", "5")
    with pytest.raises(rd.DistributedError, match="RANK=5"):
        rd.init_distributed(backend="gloo")
    clean_env.setenv("RANK", "zero")
    with pytest.raises(rd.DistributedError, match="not an integer"):
        rd.init_distributed(backend="gloo")
