"""SigLIP building block: the loss terms of one block of images against one block of texts.

Both the single-process loss (one block: all images vs all texts) and the distributed forms (local images vs the
texts of each rank) are sums of these blocks, divided at the end by the global batch size.

Two implementations of the same block:
* `_plain_block`: the direct definition with autograd; materialises the (Bi, Bt) logit matrix.
* `_ChunkedBlock`: walks the text columns in chunks, in the forward *and again in the backward* with the gradient
  written out by hand, so neither pass ever holds more than (Bi, chunk) logits. Autograd on a chunk loop would keep
  every chunk's logits alive for the backward, i.e. the full matrix again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class SiglipOutput:
    """Result of a SigLIP loss call.

    `loss = pos_loss + neg_loss` (differentiable). With several processes `loss`, `pos_loss`, `neg_loss` are this
    rank's share: summed over ranks they give the loss of one process on the concatenated batch, and the gradients
    w.r.t. the local embeddings are exactly that loss's. `loss_global` (detached) is the full value, for logging.
    `pos_logit_mean` / `neg_logit_mean` (detached) are over the global batch; `num_negatives` is the number of
    negatives each image is contrasted with (global batch size - 1).
    """

    loss: torch.Tensor
    pos_loss: torch.Tensor
    neg_loss: torch.Tensor
    loss_global: torch.Tensor
    pos_logit_mean: torch.Tensor
    neg_logit_mean: torch.Tensor
    batch_size: int
    num_negatives: int

    def log_dict(self, prefix: str = "siglip/") -> dict[str, float]:
        """Plain floats for a logger (synchronises with the device)."""
        return {
            f"{prefix}loss": float(self.loss_global),
            f"{prefix}pos_loss": float(self.pos_loss.detach()),
            f"{prefix}neg_loss": float(self.neg_loss.detach()),
            f"{prefix}pos_logit_mean": float(self.pos_logit_mean),
            f"{prefix}neg_logit_mean": float(self.neg_logit_mean),
            f"{prefix}batch_size": float(self.batch_size),
            f"{prefix}num_negatives": float(self.num_negatives),
        }


@dataclass
class BlockTerms:
    """Sums over one block: `pos_sum`/`neg_sum` of -log sigma(+-logit) (differentiable), logit sums (detached)."""

    pos_sum: torch.Tensor
    neg_sum: torch.Tensor
    pos_logit_sum: torch.Tensor
    neg_logit_sum: torch.Tensor
    n_pos: int
    n_neg: int

    def __add__(self, other: BlockTerms) -> BlockTerms:
        return BlockTerms(
            self.pos_sum + other.pos_sum,
            self.neg_sum + other.neg_sum,
            self.pos_logit_sum + other.pos_logit_sum,
            self.neg_logit_sum + other.neg_logit_sum,
            self.n_pos + other.n_pos,
            self.n_neg + other.n_neg,
        )


def _positive_mask(n_img: int, col_start: int, n_cols: int, offset: int | None, device) -> torch.Tensor:
    """(n_img, n_cols) bool: image i's positive is text column i + offset (None: the block has no positives)."""
    if offset is None:
        return torch.zeros((n_img, n_cols), dtype=torch.bool, device=device)
    cols = torch.arange(col_start, col_start + n_cols, device=device)
    rows = torch.arange(n_img, device=device) + offset
    return cols[None, :] == rows[:, None]


def _count_pos(n_img: int, n_txt: int, offset: int | None) -> int:
    if offset is None:
        return 0
    lo, hi = max(0, -offset), min(n_img, n_txt - offset)
    return max(0, hi - lo)


def _plain_block(zi, zt, scale, bias, offset) -> BlockTerms:
    logits = zi @ zt.T * scale + bias
    pos = _positive_mask(zi.shape[0], 0, zt.shape[0], offset, zi.device)
    signed = torch.where(pos, logits, -logits)
    nll = -F.logsigmoid(signed)
    zero = nll.new_zeros(())
    with torch.no_grad():
        pos_logit_sum = torch.where(pos, logits, zero).sum()
        neg_logit_sum = torch.where(pos, zero, logits).sum()
    n_pos = _count_pos(zi.shape[0], zt.shape[0], offset)
    return BlockTerms(
        torch.where(pos, nll, zero).sum(),
        torch.where(pos, zero, nll).sum(),
        pos_logit_sum,
        neg_logit_sum,
        n_pos,
        zi.shape[0] * zt.shape[0] - n_pos,
    )


class _ChunkedBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx, zi, zt, t, bias, offset, chunk):
        scale = t.exp()
        pos_sum = zi.new_zeros(())
        neg_sum = zi.new_zeros(())
        pos_logit = zi.new_zeros(())
        neg_logit = zi.new_zeros(())
        for start in range(0, zt.shape[0], chunk):
            ztc = zt[start : start + chunk]
            logits = zi @ ztc.T * scale + bias
            pos = _positive_mask(zi.shape[0], start, ztc.shape[0], offset, zi.device)
            nll = -F.logsigmoid(torch.where(pos, logits, -logits))
            pos_sum += nll[pos].sum()
            neg_sum += nll[~pos].sum()
            pos_logit += logits[pos].sum()
            neg_logit += logits[~pos].sum()
        ctx.save_for_backward(zi, zt, t, bias)
        ctx.offset, ctx.chunk = offset, chunk
        ctx.mark_non_differentiable(pos_logit, neg_logit)
        return pos_sum, neg_sum, pos_logit, neg_logit

    @staticmethod
    def backward(ctx, g_pos, g_neg, _g_pl, _g_nl):
        zi, zt, t, bias = ctx.saved_tensors
        scale = t.exp()
        need_zi, need_zt, need_t, need_b = ctx.needs_input_grad[:4]
        grad_zi = torch.zeros_like(zi) if need_zi else None
        grad_zt = torch.zeros_like(zt) if need_zt else None
        grad_t = zi.new_zeros(()) if need_t else None
        grad_b = zi.new_zeros(()) if need_b else None
        for start in range(0, zt.shape[0], ctx.chunk):
            ztc = zt[start : start + ctx.chunk]
            cos = zi @ ztc.T
            logits = cos * scale + bias
            pos = _positive_mask(zi.shape[0], start, ztc.shape[0], ctx.offset, zi.device)
            # d(-log sigma(l))/dl = -sigma(-l) for positives; d(-log sigma(-l))/dl = sigma(l) for negatives
            dlogit = torch.where(pos, -torch.sigmoid(-logits) * g_pos, torch.sigmoid(logits) * g_neg)
            if need_zi:
                grad_zi += (dlogit @ ztc) * scale
            if need_zt:
                grad_zt[start : start + ctx.chunk] = (dlogit.T @ zi) * scale
            if need_t:
                grad_t += (dlogit * cos).sum() * scale
            if need_b:
                grad_b += dlogit.sum()
        return grad_zi, grad_zt, grad_t, grad_b, None, None


def block_terms(
    zi: torch.Tensor,
    zt: torch.Tensor,
    t: torch.Tensor,
    bias: torch.Tensor,
    offset: int | None,
    chunk_size: int | None = None,
) -> BlockTerms:
    """Loss terms of unit-norm images `zi` (Bi,E) against unit-norm texts `zt` (Bt,E).

    logit_ij = exp(t) * <zi_i, zt_j> + bias. Image i's positive is text i + offset; every other pair (and all pairs
    when offset is None) is a negative. `chunk_size` bounds memory at (Bi, chunk_size) logits.
    """
    if chunk_size is None:
        return _plain_block(zi, zt, t.exp(), bias, offset)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    pos_sum, neg_sum, pl, nl = _ChunkedBlock.apply(zi, zt, t, bias, offset, int(chunk_size))
    n_pos = _count_pos(zi.shape[0], zt.shape[0], offset)
    return BlockTerms(pos_sum, neg_sum, pl, nl, n_pos, zi.shape[0] * zt.shape[0] - n_pos)


def finish(terms: BlockTerms, global_batch: int, loss_global: torch.Tensor | None = None,
           pos_logit_sum=None, neg_logit_sum=None, n_pos=None, n_neg=None) -> SiglipOutput:
    """Divide the summed terms by the global batch size (SPEC 7: the sum over j is divided by B, not B^2)."""
    pos_loss = terms.pos_sum / global_batch
    neg_loss = terms.neg_sum / global_batch
    loss = pos_loss + neg_loss
    pl = terms.pos_logit_sum if pos_logit_sum is None else pos_logit_sum
    nl = terms.neg_logit_sum if neg_logit_sum is None else neg_logit_sum
    n_pos = terms.n_pos if n_pos is None else n_pos
    n_neg = terms.n_neg if n_neg is None else n_neg
    return SiglipOutput(
        loss=loss,
        pos_loss=pos_loss,
        neg_loss=neg_loss,
        loss_global=loss.detach() if loss_global is None else loss_global,
        pos_logit_mean=pl / max(n_pos, 1),
        neg_logit_mean=nl / max(n_neg, 1),
        batch_size=global_batch,
        num_negatives=global_batch - 1,
    )
