"""Process-group helpers for training under torchrun (or single process, where they all degrade to no-ops).

`init_distributed()` reads the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), picks
NCCL when CUDA is present and gloo otherwise, and sets a collective timeout: if one rank dies, the others fail
with a timeout error after `timeout_s` instead of hanging forever (torchrun then tears the job down).
`RADFINDER_DIST_INIT_METHOD` (a torch `init_method` URL, e.g. `file:///shared/fs/rendezvous`) replaces the
MASTER_ADDR/MASTER_PORT rendezvous where no free port can be agreed on beforehand (a shared filesystem; the tests).
`collective_guard(what)` turns the backend's terse errors (a gloo timeout, a peer that closed its connection) into
a `DistributedError` that names the rank, the operation it was waiting in and the timeout.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import RadfinderError
from ..losses.collectives import all_gather_no_grad, all_gather_with_grad, dist_active, local_only

log = logging.getLogger(__name__)

__all__ = [
    "DistInfo",
    "DistributedError",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "all_reduce_mean",
    "barrier",
    "broadcast_from_main",
    "cleanup",
    "collective_guard",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "local_only",
    "local_rank",
    "rank",
    "world_size",
]

DEFAULT_TIMEOUT_S = 1800.0
_TIMEOUT_S = [DEFAULT_TIMEOUT_S]  # the timeout of the process group this process joined (for messages)


class DistributedError(RadfinderError):
    """The process group could not be set up (bad environment, unreachable rendezvous, wrong backend)."""


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    backend: str | None  # None: single process, no process group
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int | None = None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise DistributedError(f"environment variable {name}={raw!r} is not an integer") from exc


def init_distributed(
    backend: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    device: str | torch.device | None = None,
) -> DistInfo:
    """Join the torchrun process group, or return single-process info when WORLD_SIZE is unset or 1.

    backend: None picks "nccl" with CUDA, else "gloo". device: None picks cuda:LOCAL_RANK with NCCL, else CPU
    (and sets the current CUDA device, which NCCL needs). Calling it again when already initialised returns the
    current info.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank_ = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank_)
    if world is None or world < 1 or rank_ is None or not 0 <= rank_ < world:
        raise DistributedError(f"inconsistent torchrun environment: RANK={rank_}, WORLD_SIZE={world}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if device is None:
        dev = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world == 1:
        return DistInfo(0, 0, 1, None, dev)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), local, dist.get_world_size(), dist.get_backend(), dev)
    init_method = os.environ.get("RADFINDER_DIST_INIT_METHOD") or None
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing and init_method is None:
        raise DistributedError(f"WORLD_SIZE={world} but {', '.join(missing)} not set; launch with torchrun")
    where = init_method or f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    if backend == "nccl":
        # make NCCL surface a dead peer as an error at the timeout rather than blocking the stream forever
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    try:
        dist.init_process_group(
            backend=backend,
            init_method=init_method,
            rank=rank_,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
            **({"device_id": dev} if dev.type == "cuda" else {}),
        )
    except Exception as exc:  # the torch errors do not say which rank or address was involved
        raise DistributedError(
            f"rank {rank_}/{world}: could not join the {backend} process group at "
            f"{where} within {timeout_s:.0f} s: {exc}"
        ) from exc
    _TIMEOUT_S[0] = float(timeout_s)
    log.info("rank %d/%d joined %s process group (device %s)", rank_, world, backend, dev)
    return DistInfo(rank_, local, world, backend, dev)


def is_distributed() -> bool:
    return dist_active()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    return _env_int("LOCAL_RANK", rank()) or 0


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist_active():
        dist.barrier()


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled through the process group); `obj` itself with one process."""
    if not dist_active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


_PEER_GONE = ("connection closed", "connection reset", "broken pipe", "connection refused")
_TIMED_OUT = ("timed out", "timeout")


def _is_collective_error(exc: BaseException) -> bool:
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("gloo" in text or "nccl" in text or any(
        k in text for k in _PEER_GONE + _TIMED_OUT))


@contextlib.contextmanager
def collective_guard(what: str) -> Iterator[None]:
    """Run a block that enters collectives; a collective that times out or loses its peer becomes a
    `DistributedError` saying which rank waited, in `what`, for how long, and what to look at.

    Every collective waits at most the process group's timeout (`distributed.timeout_s`), after which the backend
    raises here (gloo) or its watchdog ends the process (NCCL); nothing waits forever.
    """
    try:
        yield
    except RadfinderError:
        raise
    except Exception as exc:
        if not (dist.is_available() and dist.is_initialized()) or not _is_collective_error(exc):
            raise
        who = f"rank {dist.get_rank()}/{dist.get_world_size()}"
        text = str(exc).lower()
        if any(k in text for k in _PEER_GONE):
            why = "another rank left the job (its connection closed): see that rank's error above"
        elif any(k in text for k in _TIMED_OUT):
            why = (f"the other ranks did not join within {_TIMEOUT_S[0]:.0f} s (distributed.timeout_s): one of them "
                   "failed, is stuck, or is busy in work that takes longer (raise distributed.timeout_s if so)")
        else:
            why = f"a collective failed: {exc}"
        raise DistributedError(f"{who}: {what}: {why}") from exc


@torch.no_grad()
def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a copy; for logging metrics). Identity with one process."""
    if not dist_active():
        return tensor.clone()
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def cleanup() -> None:
    """Leave the process group (safe to call when none exists)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
