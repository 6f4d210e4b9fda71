"""Module-level worker functions for the multi-process tests (spawned processes import them by name).

Every worker builds the *global* data from a fixed seed, so each rank can compute the single-process reference on
the concatenated batch itself and compare with what the distributed code gives it. Failures raise, and
torch.multiprocessing re-raises them in the test process with the traceback.
"""

from __future__ import annotations

import copy
import datetime
import os
import sys

import torch
import torch.distributed as dist
from torch import nn


def _init(rank: int, world: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )


def leave_without_teardown() -> None:
    """End a worker whose checks passed: a barrier (both ranks are done with every collective), then exit without
    destroying the gloo group. Its C++ teardown intermittently aborted one rank on a loaded machine even after a
    barrier ("terminate called without an active exception", SIGABRT); the process ends here anyway."""
    if dist.is_initialized():  # a worker whose code under test left the group already has nothing to wait for
        dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _close(a: torch.Tensor, b: torch.Tensor, what: str, rtol=1e-10, atol=1e-12) -> None:
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def _sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    out = x.detach().clone()
    dist.all_reduce(out)
    return out


def siglip_worker(rank: int, world: int, init_file: str) -> None:
    from radfinder.losses import SigLipLoss, siglip_loss, siglip_loss_distributed

    _init(rank, world, init_file)
    try:
        for sizes in ([4] * world, [3 + 2 * r for r in range(world)]):  # even, then uneven local batches
            g = torch.Generator().manual_seed(sum(sizes))
            n, e = sum(sizes), 5
            img_all = torch.randn(n, e, generator=g, dtype=torch.float64)
            txt_all = torch.randn(n, e, generator=g, dtype=torch.float64) + img_all
            lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])

            ref_in = [img_all.clone().requires_grad_(True), txt_all.clone().requires_grad_(True),
                      torch.tensor(1.2, dtype=torch.float64, requires_grad=True),
                      torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)]
            ref = siglip_loss(*ref_in)
            ref_grads = torch.autograd.grad(ref.loss, ref_in)

            for mode in ("gather", "ring"):
                for chunk in (None, 2):
                    what = f"sizes={sizes} mode={mode} chunk={chunk}"
                    img = img_all[lo:hi].clone().requires_grad_(True)
                    txt = txt_all[lo:hi].clone().requires_grad_(True)
                    t = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
                    b = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
                    out = siglip_loss_distributed(img, txt, t, b, mode=mode, chunk_size=chunk)
                    out.loss.backward()
                    assert out.batch_size == n and out.num_negatives == n - 1, what
                    _close(_sum_over_ranks(out.loss), ref.loss.detach(), what + " summed shares")
                    _close(_sum_over_ranks(out.pos_loss), ref.pos_loss.detach(), what + " pos")
                    _close(out.loss_global, ref.loss.detach(), what + " loss_global")
                    _close(out.pos_logit_mean, ref.pos_logit_mean, what + " pos logit mean")
                    _close(out.neg_logit_mean, ref.neg_logit_mean, what + " neg logit mean")
                    _close(img.grad, ref_grads[0][lo:hi], what + " d/d img")
                    _close(txt.grad, ref_grads[1][lo:hi], what + " d/d txt")
                    _close(_sum_over_ranks(t.grad), ref_grads[2], what + " d/d t")
                    _close(_sum_over_ranks(b.grad), ref_grads[3], what + " d/d b")

        # the module picks the gathered form by itself once a process group exists
        mod = SigLipLoss(t_init=1.2, bias_init=-2.0).double()
        out = mod(img_all[lo:hi], txt_all[lo:hi])
        _close(out.loss_global, siglip_loss(img_all, txt_all, mod.t, mod.b).loss.detach(), "SigLipLoss auto mode")
        local = SigLipLoss(t_init=1.2, bias_init=-2.0, dist_mode="local").double()(img_all[lo:hi], txt_all[lo:hi])
        assert local.batch_size == sizes[rank]
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_without_teardown()


def gather_impl_worker(rank: int, world: int, init_file: str) -> None:
    """Joins through `init_distributed` (its rendezvous env set by the test), then checks that both
    autograd all-gathers (torch's functional collective and our fallback) and the ring shift carry gradients."""
    from radfinder.losses.collectives import all_gather_with_grad, ring_shift_with_grad
    from radfinder.train import distributed as rd

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    info = rd.init_distributed(backend="gloo", timeout_s=60)
    try:
        assert (info.rank, info.world_size, info.backend) == (rank, world, "gloo")
        assert rd.rank() == rank and rd.world_size() == world and rd.is_main_process() == (rank == 0)
        assert rd.is_distributed()
        rd.barrier()
        mean = rd.all_reduce_mean(torch.tensor([float(rank)]))
        _close(mean, torch.tensor([(world - 1) / 2]), "all_reduce_mean")
        for impl in ("torch", "own"):
            x = torch.full((2, 3), float(rank + 1), dtype=torch.float64, requires_grad=True)
            y = all_gather_with_grad(x, impl=impl)
            assert y.shape == (2 * world, 3)
            _close(y[:, 0], torch.arange(1, world + 1, dtype=torch.float64).repeat_interleave(2), impl)
            # rank r weighs row k by (r + 1) * (k + 1): d/dx of the sum over ranks is sum_r (r + 1) * (k + 1)
            w = (rank + 1) * torch.arange(1, 2 * world + 1, dtype=torch.float64)[:, None].expand(-1, 3)
            (y * w).sum().backward()
            rows = torch.arange(2 * rank + 1, 2 * rank + 3, dtype=torch.float64)[:, None].expand(-1, 3)
            _close(x.grad, rows * sum(r + 1 for r in range(world)), impl + " gradient")
        x = torch.full((1, 2), float(rank), dtype=torch.float64, requires_grad=True)
        y = ring_shift_with_grad(x)
        _close(y, torch.full((1, 2), float((rank - 1) % world), dtype=torch.float64), "ring value")
        (y * (rank + 10)).sum().backward()  # our value went to rank+1, whose weight comes back to us
        _close(x.grad, torch.full((1, 2), float((rank + 1) % world + 10), dtype=torch.float64), "ring gradient")
    finally:
        rd.cleanup()
    assert not rd.is_distributed() and rd.world_size() == 1


class Towers(nn.Module):
    def __init__(self):
        super().__init__()
        self.img = nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Dropout(0.3), nn.Linear(12, 4))
        self.txt = nn.Sequential(nn.Dropout(0.3), nn.Linear(5, 4))

    def forward(self, mb):
        return self.img(mb[0]), self.txt(mb[1])


def gradcache_ddp_worker(rank: int, world: int, init_file: str) -> None:
    """GradCache through DDP with the gathered SigLIP loss equals one big batch over all ranks' samples."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from radfinder.losses import SigLipLoss, siglip_loss
    from radfinder.train.gradcache import GradCache

    _init(rank, world, init_file)
    try:
        splits = [[3, 2], [1, 4]][:world] + [[2, 3]] * max(0, world - 2)  # same count per rank, sizes differ
        local_n = [sum(s) for s in splits]
        g = torch.Generator().manual_seed(11)
        x_img = torch.randn(sum(local_n), 6, generator=g, dtype=torch.float64)
        x_txt = torch.randn(sum(local_n), 5, generator=g, dtype=torch.float64)

        def micro_batches(r):
            start = sum(local_n[:r])
            out = []
            for s in splits[r]:
                out.append((x_img[start : start + s], x_txt[start : start + s]))
                start += s
            return out

        torch.manual_seed(0)
        model = Towers().double()
        loss = SigLipLoss(t_init=1.0, bias_init=-1.0).double()

        # reference: one process, every rank's micro-batches in rank order, each rank's dropout seed
        ref_model, ref_loss = copy.deepcopy(model), copy.deepcopy(loss)
        outs = []
        for r in range(world):
            torch.manual_seed(100 + r)
            outs += [ref_model(mb) for mb in micro_batches(r)]
        ref = siglip_loss(torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs]), ref_loss.t, ref_loss.b)
        ref.loss.backward()

        ddp = DDP(model)
        torch.manual_seed(100 + rank)
        res = GradCache(ddp, loss, no_sync=ddp.no_sync, verify=True).step(micro_batches(rank))
        torch.testing.assert_close(res.loss, ref.loss.detach(), rtol=1e-10, atol=1e-12)
        assert res.loss_output.num_negatives == sum(local_n) - 1
        for (name, p), (_, q) in zip(model.named_parameters(), ref_model.named_parameters(), strict=True):
            # DDP averages over ranks; the big-batch gradient is the sum of the ranks' shares
            _close(p.grad * world, q.grad, f"DDP param {name}")
        _close(_sum_over_ranks(loss.t.grad), ref_loss.t.grad, "t")
        _close(_sum_over_ranks(loss.b.grad), ref_loss.b.grad, "b")
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_without_teardown()
