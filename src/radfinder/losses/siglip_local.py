"""Single-process SigLIP loss (SPEC 7), direct or chunked, and the helpers every SigLIP form shares.

    logit_ij = exp(t) * cos(img_i, txt_j) + b
    loss     = -(1/B) * sum_i sum_j log sigma(z_ij * logit_ij),   z_ij = +1 if i == j else -1

The double sum is divided by B (not B^2): `pos_loss` is the mean positive term, `neg_loss` the mean over images of
the summed negative terms. The multi-process form (`siglip_dist`) and the learnable module (`siglip`) build on this.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._validate import LossInputError, as_scalar, check_shape
from .siglip_terms import SiglipOutput, block_terms, finish

LN10 = math.log(10.0)
NORM_EPS = 1e-12


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last axis with the reference's eps (1e-12)."""
    return F.normalize(x, dim=-1, eps=NORM_EPS)


def check_pair(img_emb: torch.Tensor, txt_emb: torch.Tensor) -> None:
    check_shape("img_emb", img_emb, 2, "(B, E)")
    check_shape("txt_emb", txt_emb, 2, "(B, E)")
    if img_emb.shape != txt_emb.shape:
        raise LossInputError(
            f"img_emb and txt_emb must have the same shape (paired rows), got {tuple(img_emb.shape)} "
            f"and {tuple(txt_emb.shape)}"
        )
    if img_emb.shape[0] == 0:
        raise LossInputError("SigLIP loss needs at least one pair, got an empty batch")


def siglip_loss(
    img_emb: torch.Tensor,
    txt_emb: torch.Tensor,
    t: torch.Tensor | float,
    b: torch.Tensor | float,
    *,
    chunk_size: int | None = None,
) -> SiglipOutput:
    """SigLIP loss of paired rows; embeddings are L2-normalised here (eps 1e-12).

    `t` is the log of the logit scale and `b` the bias (tensors to learn them). With `chunk_size` the text columns
    are processed `chunk_size` at a time in the forward and the backward, so memory is O(B * chunk_size) instead of
    O(B^2); value and gradients equal the unchunked form up to float summation order.
    """
    check_pair(img_emb, txt_emb)
    zi, zt = normalize(img_emb), normalize(txt_emb)
    t_ = as_scalar("t", t, zi)
    b_ = as_scalar("b", b, zi)
    return finish(block_terms(zi, zt, t_, b_, offset=0, chunk_size=chunk_size), zi.shape[0])
