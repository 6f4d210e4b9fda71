"""Multi-process SigLIP: each rank's images against the texts of every rank.

Each rank computes the terms of its own image rows against all texts and divides by the *global* batch size, so the
sum of the per-rank losses is the single-process loss on the concatenated batch, and (because the collectives carry
gradients back) the gradient w.r.t. each rank's local embeddings equals that loss's. DDP averages parameter
gradients over ranks, so under DDP a parameter gradient is that loss's gradient / world_size: multiply the loss by
the world size before `backward` (or fold it into the learning rate) to get the big-batch gradient exactly.

Modes:
* "gather": autograd all-gather of the text embeddings, one (B_local, B_global) block. Works everywhere (gloo).
* "ring": the text block is passed around the ring with point-to-point sends (world-1 shifts); each step is a
  (B_local, B_src) block. Meant for NCCL, where sends overlap with compute; gloo's batched P2P is not considered
  stable by torch maintainers.
Uneven local batch sizes are supported in both modes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ._validate import LossInputError, as_scalar
from .collectives import all_gather_sizes, all_gather_with_grad, dist_active, ring_shift_with_grad
from .siglip_local import check_pair, normalize, siglip_loss
from .siglip_terms import BlockTerms, SiglipOutput, block_terms, finish


def _gather_texts(zt: torch.Tensor, sizes: list[int], group) -> torch.Tensor:
    n_max = max(sizes)
    if all(s == n_max for s in sizes):
        return all_gather_with_grad(zt, group)
    # all_gather needs equal shapes: pad to the largest rank, gather, then drop the padding rows
    padded = torch.cat([zt, zt.new_zeros((n_max - zt.shape[0], zt.shape[1]))]) if zt.shape[0] < n_max else zt
    gathered = all_gather_with_grad(padded, group)
    return torch.cat([gathered[r * n_max : r * n_max + s] for r, s in enumerate(sizes)])


def siglip_loss_distributed(
    img_emb: torch.Tensor,
    txt_emb: torch.Tensor,
    t: torch.Tensor | float,
    b: torch.Tensor | float,
    *,
    mode: str = "gather",
    chunk_size: int | None = None,
    group: dist.ProcessGroup | None = None,
) -> SiglipOutput:
    """This rank's share of the SigLIP loss of the global batch (negatives from every rank); see module doc.

    Without an initialised multi-process group this is `siglip_loss`. The returned `loss_global` and logit means
    are all-reduced (detached) for logging; `loss`, `pos_loss`, `neg_loss` are the differentiable shares.
    """
    if mode not in ("gather", "ring"):
        raise LossInputError(f"mode must be 'gather' or 'ring', got {mode!r}")
    if not dist_active(group):
        return siglip_loss(img_emb, txt_emb, t, b, chunk_size=chunk_size)
    check_pair(img_emb, txt_emb)
    zi, zt = normalize(img_emb), normalize(txt_emb)
    t_, b_ = as_scalar("t", t, zi), as_scalar("b", b, zi)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    sizes = all_gather_sizes(zi.shape[0], zi.device, group)
    global_batch = sum(sizes)

    if mode == "gather":
        zt_all = _gather_texts(zt, sizes, group)
        terms = block_terms(zi, zt_all, t_, b_, offset=sum(sizes[:rank]), chunk_size=chunk_size)
    else:
        terms: BlockTerms = block_terms(zi, zt, t_, b_, offset=0, chunk_size=chunk_size)
        held = zt
        for step in range(1, world):
            src = (rank - step) % world  # after `step` shifts we hold the texts of rank - step
            held = ring_shift_with_grad(held, recv_rows=sizes[src], group=group)
            terms = terms + block_terms(zi, held, t_, b_, offset=None, chunk_size=chunk_size)

    stats = torch.stack([terms.pos_sum.detach(), terms.neg_sum.detach(), terms.pos_logit_sum, terms.neg_logit_sum])
    dist.all_reduce(stats, op=dist.ReduceOp.SUM, group=group)
    n_pos = global_batch
    n_neg = global_batch * global_batch - global_batch
    return finish(
        terms,
        global_batch,
        loss_global=(stats[0] + stats[1]) / global_batch,
        pos_logit_sum=stats[2],
        neg_logit_sum=stats[3],
        n_pos=n_pos,
        n_neg=n_neg,
    )
