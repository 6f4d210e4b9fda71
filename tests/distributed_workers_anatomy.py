"""Worker functions for the multi-process fVLM and soft-contrastive loss tests (spawned processes import them by
name). Each rank builds the global batch from a fixed seed, computes the single-process loss on it as reference and
compares with the distributed form on its local slice: summed shares, per-anatomy terms, local gradients."""

from __future__ import annotations

import torch
import torch.distributed as dist

from distributed_workers import _close, _init, _sum_over_ranks, leave_without_teardown


def fvlm_worker(rank: int, world: int, init_file: str) -> None:
    from radfinder.losses import fvlm_loss_terms

    _init(rank, world, init_file)
    try:
        for sizes in ([4] * world, [3 + 2 * r for r in range(world)]):
            g = torch.Generator().manual_seed(sum(sizes))
            n, a, d = sum(sizes), 3, 5
            image = torch.randn(n, a, d, generator=g, dtype=torch.float64)
            text = torch.randn(n, a, d, generator=g, dtype=torch.float64) + image
            valid = torch.rand(n, a, generator=g) < 0.8
            normal = torch.rand(n, a, generator=g) < 0.5
            ids = torch.randint(0, 3, (n, a), generator=g)
            ids[normal] = 42
            normal[0, :] = False
            fids = torch.randint(0, 2, (n, a), generator=g)
            lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
            for finding_ids in (None, fids):
                what = f"sizes={sizes} disease_aware={finding_ids is not None}"
                ref_in = [image.clone().requires_grad_(True), text.clone().requires_grad_(True),
                          torch.tensor(0.08, dtype=torch.float64, requires_grad=True)]  # fmt: skip
                ref = fvlm_loss_terms(*ref_in[:2], valid, normal, ids, ref_in[2], finding_ids=finding_ids, local=True)
                ref_grads = torch.autograd.grad(ref.loss, ref_in)
                im = image[lo:hi].clone().requires_grad_(True)
                tx = text[lo:hi].clone().requires_grad_(True)
                t = torch.tensor(0.08, dtype=torch.float64, requires_grad=True)
                local_f = None if finding_ids is None else finding_ids[lo:hi]
                out = fvlm_loss_terms(im, tx, valid[lo:hi], normal[lo:hi], ids[lo:hi], t, finding_ids=local_f)
                out.loss.backward()
                assert ref.loss.item() > 0, what
                _close(_sum_over_ranks(out.loss), ref.loss.detach(), what + " summed shares")
                _close(out.per_anatomy, ref.per_anatomy, what + " per anatomy")
                assert torch.equal(out.used, ref.used) and torch.equal(out.rows, ref.rows), what
                _close(im.grad, ref_grads[0][lo:hi], what + " d/d image")
                _close(tx.grad, ref_grads[1][lo:hi], what + " d/d text")
                _close(_sum_over_ranks(t.grad), ref_grads[2], what + " d/d temperature")
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_without_teardown()


def soft_contrastive_worker(rank: int, world: int, init_file: str) -> None:
    from radfinder.losses import soft_contrastive_loss

    _init(rank, world, init_file)
    try:
        for sizes in ([4] * world, [3 + 2 * r for r in range(world)]):
            g = torch.Generator().manual_seed(100 + sum(sizes))
            n, d = sum(sizes), 5
            image = torch.randn(n, d, generator=g, dtype=torch.float64)
            text = torch.randn(n, d, generator=g, dtype=torch.float64) + image
            w = torch.rand(n, n, generator=g, dtype=torch.float64) * (torch.rand(n, n, generator=g) < 0.5)
            w = w + torch.eye(n, dtype=torch.float64)
            v = torch.rand(n, n, generator=g, dtype=torch.float64) + torch.eye(n, dtype=torch.float64)
            lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
            for intra, t2i in ((0.0, None), (0.4, None), (0.4, v)):
                for block in ("rows", "full"):
                    what = f"sizes={sizes} intra={intra} targets={block} t2i={t2i is not None}"
                    ref_in = [image.clone().requires_grad_(True), text.clone().requires_grad_(True),
                              torch.tensor(0.1, dtype=torch.float64, requires_grad=True)]  # fmt: skip
                    ref = soft_contrastive_loss(ref_in[0], ref_in[1], w, ref_in[2], intra, targets_t2i=t2i,
                                                local=True)  # fmt: skip
                    ref_grads = torch.autograd.grad(ref, ref_in)
                    im = image[lo:hi].clone().requires_grad_(True)
                    tx = text[lo:hi].clone().requires_grad_(True)
                    t = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
                    targets = w[lo:hi] if block == "rows" else w
                    v_in = None if t2i is None else (t2i[lo:hi] if block == "rows" else t2i)
                    out = soft_contrastive_loss(im, tx, targets, t, intra, targets_t2i=v_in)
                    out.backward()
                    _close(_sum_over_ranks(out), ref.detach(), what + " summed shares")
                    _close(im.grad, ref_grads[0][lo:hi], what + " d/d image")
                    _close(tx.grad, ref_grads[1][lo:hi], what + " d/d text")
                    _close(_sum_over_ranks(t.grad), ref_grads[2], what + " d/d temperature")
    except BaseException:
        dist.destroy_process_group()
        raise
    leave_without_teardown()
