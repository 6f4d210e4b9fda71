"""Soft-target contrastive loss (our formulation of SCALE-VLP's soft-weighted contrastive alignment; the paper's
equation is not public, see docs/soft_contrastive.md).

For image and text embeddings (B, D), L2-normalised inside, and non-negative soft targets W (B, B):

    logits = image . text^T / temperature
    P = rows of W divided by their sums          (image-to-text targets)
    Q = rows of W^T divided by their sums        (text-to-image targets), or the rows of `targets_t2i` divided by
        their sums when given (`soft_target_pair` builds both directions so that each keeps the true pair's share)
    L = ( CE(logits, P) + CE(logits^T, Q) ) / 2,  CE(X, P) = mean_i  -sum_j P_ij log softmax_j(X_i)

With W = I this is CLIP's InfoNCE. Optional intra-modal terms (`intra_weight` > 0): image-image and text-text
logits against the same W, with the diagonal removed from both logits and targets, each a mean over the rows whose
off-diagonal target mass is positive (0 when there is none):

    L += intra_weight * (CE_offdiag(image . image^T / temperature, W) + CE_offdiag(text . text^T / temperature, W)) / 2

Distributed form: each rank passes its local embeddings and either its rows of W against the global batch
(B_local, B_global) or the whole (B_global, B_global) block; rows are gathered into the global block. Each rank
computes the rows of its own images and texts, divided by the global row counts, so the sum of the ranks' losses is
the single-process loss on the concatenated batch, with the same gradients w.r.t. each rank's local embeddings.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ._validate import LossInputError, as_scalar, check_shape
from .collectives import all_gather_rows, all_gather_sizes, dist_active


def _check_targets(w: torch.Tensor, columns: bool = True, name: str = "targets") -> None:
    if not torch.isfinite(w).all() or (w < 0).any():
        raise LossInputError(f"{name} must be finite and non-negative")
    if (w.sum(1) <= 0).any() or (columns and (w.sum(0) <= 0).any()):
        what = "row and column" if columns else "row"
        raise LossInputError(f"every {what} of {name} needs a positive sum (add alpha * I)")


def _row_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over rows of -sum_j t_ij log softmax_j, targets already row-normalised; -inf logits get 0 target."""
    logp = F.log_softmax(logits, dim=-1)
    return -(targets * logp.masked_fill(targets == 0, 0.0)).sum()


def _offdiag_term(z_loc, z_all, w_rows, lo, temp, n_rows_global):
    """Intra-modal share: local rows vs the global batch with the diagonal (global positions) removed."""
    b = z_loc.shape[0]
    diag = torch.zeros_like(w_rows, dtype=torch.bool)
    diag[torch.arange(b), lo + torch.arange(b)] = True
    w = w_rows.masked_fill(diag, 0.0)
    mass = w.sum(1)
    keep = mass > 0
    if n_rows_global == 0 or not bool(keep.any()):
        return None
    logits = (z_loc @ z_all.T / temp).masked_fill(diag, float("-inf"))
    return _row_ce(logits[keep], w[keep] / mass[keep, None]) / n_rows_global


def soft_contrastive_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    targets: torch.Tensor,
    temperature: torch.Tensor | float,
    intra_weight: float = 0.0,
    *,
    targets_t2i: torch.Tensor | None = None,
    group: dist.ProcessGroup | None = None,
    local: bool = False,
) -> torch.Tensor:
    """Scalar soft-target contrastive loss (see module doc); this process's share when a process group is active,
    unless `local` (then this process's batch alone)."""
    check_shape("image", image, 2, "(B, D)")
    check_shape("text", text, 2, "(B, D)")
    check_shape("targets", targets, 2, "(B, B)")
    if image.shape != text.shape:
        raise LossInputError(
            f"image and text must have the same shape, got {tuple(image.shape)} and {tuple(text.shape)}"
        )
    if intra_weight < 0:
        raise LossInputError(f"intra_weight must be >= 0, got {intra_weight}")
    zi, zt = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    temp = as_scalar("temperature", temperature, zi)
    w = targets.to(dtype=zi.dtype, device=zi.device).detach()
    v = None if targets_t2i is None else targets_t2i.to(dtype=zi.dtype, device=zi.device).detach()
    if v is not None:
        check_shape("targets_t2i", v, 2, "(B, B)")
    b = zi.shape[0]
    if dist_active(group) and not local:
        sizes = all_gather_sizes(b, zi.device, group)
        rank = dist.get_rank(group)
        n = sum(sizes)
        lo = sum(sizes[:rank])
        zi_all, zt_all = all_gather_rows(zi, sizes, group, True), all_gather_rows(zt, sizes, group, True)

        def global_block(x: torch.Tensor, name: str) -> torch.Tensor:
            if tuple(x.shape) == (b, n):
                return all_gather_rows(x, sizes, group, False)
            if tuple(x.shape) == (n, n):
                return x
            raise LossInputError(
                f"{name} must be (B_local, B_global) = ({b}, {n}) or ({n}, {n}), got {tuple(x.shape)}"
            )

        w_all = global_block(w, "targets")
        v_all = None if v is None else global_block(v, "targets_t2i")
    else:
        n, lo = b, 0
        zi_all, zt_all, w_all, v_all = zi, zt, w, v
        for x, name in ((w, "targets"), (v, "targets_t2i")):
            if x is not None and tuple(x.shape) != (b, b):
                raise LossInputError(f"{name} must be (B, B) = ({b}, {b}), got {tuple(x.shape)}")
    _check_targets(w_all, columns=v_all is None)
    if v_all is not None:
        _check_targets(v_all, columns=False, name="targets_t2i")
    hi = lo + b
    p = w_all[lo:hi] / w_all[lo:hi].sum(1, keepdim=True)
    wt = w_all.T if v_all is None else v_all
    q = wt[lo:hi] / wt[lo:hi].sum(1, keepdim=True)
    i2t = _row_ce(zi @ zt_all.T / temp, p) / n
    t2i = _row_ce(zt @ zi_all.T / temp, q) / n
    loss = (i2t + t2i) / 2
    if intra_weight > 0:
        off = w_all.clone()
        off.fill_diagonal_(0.0)
        n_rows = int((off.sum(1) > 0).sum())
        terms = [
            _offdiag_term(zi, zi_all, w_all[lo:hi], lo, temp, n_rows),
            _offdiag_term(zt, zt_all, w_all[lo:hi], lo, temp, n_rows),
        ]
        intra = sum(t for t in terms if t is not None)
        if isinstance(intra, torch.Tensor):
            loss = loss + intra_weight * intra / 2
    return loss
