"""Autograd-aware collectives used by the distributed losses.

They live here rather than in `radfinder.train.distributed` because losses sit below `train` in the layer order;
`train.distributed` re-exports them for the trainer.

Gradient convention: if every rank computes a loss on its share and calls `backward`, the gradient that arrives at a
rank's local tensor is the sum of what every rank's loss contributes to it. So the gradient w.r.t. local inputs is
that of the *sum over ranks* of the per-rank losses, which is what makes "sum of shares == loss on the concatenated
batch" give identical embedding gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist

_LOCAL_ONLY = [0]  # depth of nested `local_only()` blocks in this process


def _all_gather_into(out: torch.Tensor, tensor: torch.Tensor, group) -> None:
    # torch 2.13 renamed all_gather_into_tensor to all_gather_single (the old name warns)
    fn = dist.all_gather_single if hasattr(dist, "all_gather_single") else dist.all_gather_into_tensor
    fn(out, tensor.contiguous(), group=group)


def dist_active(group: dist.ProcessGroup | None = None) -> bool:
    """True when a process group is initialised, spans more than one process, and no `local_only()` is open."""
    if _LOCAL_ONLY[0]:
        return False
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Within the block this process acts as if it were alone: every collective here degrades to its single-process
    form. For work one rank does while the others wait (rank-0 evaluation hooks), which must never enter a collective
    the other ranks are not in."""
    _LOCAL_ONLY[0] += 1
    try:
        yield
    finally:
        _LOCAL_ONLY[0] -= 1


class _AllGatherGrad(torch.autograd.Function):
    """Own fallback: forward gathers, backward sums every rank's gradient and keeps this rank's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group):
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.n = tensor.shape[0]
        world = dist.get_world_size(group)
        out = tensor.new_empty((world * tensor.shape[0], *tensor.shape[1:]))
        _all_gather_into(out, tensor, group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        # all_reduce + slice rather than reduce_scatter: gloo has no reduce_scatter on every torch version.
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None


def _functional_all_gather():
    """The torch autograd all-gather if this version has one (names changed in 2.13), else None."""
    try:
        import torch.distributed._functional_collectives as fc
    except ImportError:  # pragma: no cover - very old torch
        return None
    for name in ("all_gather_single_autograd", "all_gather_tensor_autograd"):
        if hasattr(fc, name):
            fn = getattr(fc, name)

            def gather(t: torch.Tensor, group, _fn=fn, _fc=fc) -> torch.Tensor:
                out = _fn(t.contiguous(), 0, group if group is not None else dist.group.WORLD)
                # functional collectives return an async wrapper; materialise it so callers get a plain tensor
                return _fc.wait_tensor(out) if hasattr(_fc, "wait_tensor") else out

            return gather
    return None


def all_gather_with_grad(
    tensor: torch.Tensor, group: dist.ProcessGroup | None = None, *, impl: str = "auto"
) -> torch.Tensor:
    """Concatenate `tensor` (same shape on every rank) from all ranks along dim 0, with gradients flowing back.

    Rank r's rows are at `[r*n, (r+1)*n)`. With a single process this returns the input unchanged.
    `impl`: "auto" (torch's functional collective when present, else our own), "torch", or "own".
    """
    if not dist_active(group):
        return tensor
    if impl not in ("auto", "torch", "own"):
        raise ValueError(f"impl must be 'auto', 'torch' or 'own', got {impl!r}")
    if impl != "own":
        fn = _functional_all_gather()
        if fn is not None:
            return fn(tensor, group)
        if impl == "torch":
            raise RuntimeError("this torch version has no autograd all-gather in _functional_collectives")
    return _AllGatherGrad.apply(tensor, group)


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Concatenate along dim 0 from all ranks, without a graph (e.g. for cached embeddings or metrics)."""
    if not dist_active(group):
        return tensor
    world = dist.get_world_size(group)
    out = tensor.new_empty((world * tensor.shape[0], *tensor.shape[1:]))
    _all_gather_into(out, tensor, group)
    return out


def all_gather_sizes(n: int, device: torch.device, group: dist.ProcessGroup | None = None) -> list[int]:
    """Every rank's local row count (for uneven batches)."""
    if not dist_active(group):
        return [n]
    local = torch.tensor([n], dtype=torch.int64, device=device)
    return [int(v) for v in all_gather_no_grad(local, group).tolist()]


def all_gather_rows(x: torch.Tensor, sizes: list[int] | None = None, group: dist.ProcessGroup | None = None,
                    with_grad: bool = False) -> torch.Tensor:
    """Every rank's rows concatenated in rank order when ranks hold different row counts (`sizes`, from
    `all_gather_sizes` when not given): padded to the largest for the collective, the padding dropped after.
    Bool tensors travel as int64 (not every backend gathers bool)."""
    if not dist_active(group):
        return x
    sizes = sizes if sizes is not None else all_gather_sizes(x.shape[0], x.device, group)
    n_max = max(sizes)
    if x.shape[0] < n_max:
        x = torch.cat([x, x.new_zeros((n_max - x.shape[0], *x.shape[1:]))])
    if with_grad:
        g = all_gather_with_grad(x, group)
    elif x.dtype == torch.bool:
        g = all_gather_no_grad(x.to(torch.int64), group).bool()
    else:
        g = all_gather_no_grad(x, group)
    if all(s == n_max for s in sizes):
        return g
    return torch.cat([g[r * n_max : r * n_max + s] for r, s in enumerate(sizes)])


def _exchange(send: torch.Tensor, to_rank: int, recv_shape, from_rank: int, group) -> torch.Tensor:
    recv = send.new_empty(recv_shape)
    ops = [
        dist.P2POp(dist.isend, send.contiguous(), to_rank, group=group),
        dist.P2POp(dist.irecv, recv, from_rank, group=group),
    ]
    for req in dist.batch_isend_irecv(ops):
        req.wait()
    return recv


class _RingShift(torch.autograd.Function):
    """Send to `to_rank`, receive from `from_rank`; backward sends the gradient the opposite way."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, to_rank: int, from_rank: int, recv_shape, group):
        ctx.to_rank, ctx.from_rank, ctx.group = to_rank, from_rank, group
        ctx.send_shape = tensor.shape
        return _exchange(tensor, to_rank, recv_shape, from_rank, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # the gradient of what we received goes back to whoever sent it; we receive the gradient of what we sent
        back = _exchange(grad, ctx.from_rank, ctx.send_shape, ctx.to_rank, ctx.group)
        return back, None, None, None, None


def ring_shift_with_grad(
    tensor: torch.Tensor,
    recv_rows: int | None = None,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Pass `tensor` to rank+1 and return what rank-1 sent (gradients flow back along the ring).

    `recv_rows` is the row count rank-1 sends (defaults to this tensor's; give it for uneven batches).
    Uses `batch_isend_irecv`; intended for NCCL, where it overlaps with compute. On gloo it works in our tests, but
    torch maintainers call gloo's batched P2P unstable, so `all_gather_with_grad` is the default there.
    """
    if not dist_active(group):
        return tensor
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    # P2POp peers are global ranks
    to_rank = dist.get_global_rank(group, (rank + 1) % world) if group is not None else (rank + 1) % world
    from_rank = dist.get_global_rank(group, (rank - 1) % world) if group is not None else (rank - 1) % world
    rows = tensor.shape[0] if recv_rows is None else recv_rows
    return _RingShift.apply(tensor, to_rank, from_rank, (rows, *tensor.shape[1:]), group)
