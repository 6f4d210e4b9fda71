"""The SigLIP loss module with a learnable temperature and bias (SPEC 7), local or across ranks.

The functional single-process form is `siglip_local.siglip_loss`, the multi-process one
`siglip_dist.siglip_loss_distributed`; both are re-exported here.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
from torch import nn

from ._validate import LossInputError
from .collectives import dist_active
from .siglip_dist import siglip_loss_distributed
from .siglip_local import LN10, NORM_EPS, check_pair, normalize, siglip_loss
from .siglip_terms import SiglipOutput

__all__ = [
    "LN10", "NORM_EPS", "DistMode", "SigLipLoss", "batch_bias_init", "check_pair", "normalize", "siglip_loss",
    "siglip_loss_distributed",
]

log = logging.getLogger(__name__)


def batch_bias_init(batch_size: int) -> float:
    """Bias whose sigmoid is the positive prior 1/B: log((1/B) / (1 - 1/B)) = -log(B - 1).

    At initialisation every logit is about b, and with B-1 negatives per positive this makes the initial predicted
    probability match the label frequency, so the first steps are not spent only moving b. The paper's -10 is this
    value for B of about 22k; for the small batches of 3D CT it is far too negative (B = 64 gives -4.1).
    """
    if batch_size < 2:
        raise LossInputError(f"bias_init='batch' needs the global batch size >= 2, got {batch_size}")
    return -math.log(batch_size - 1)


DistMode = Literal["auto", "gather", "ring", "local"]


class SigLipLoss(nn.Module):
    """SigLIP loss with learnable `t` (log logit scale) and `b` (bias).

    Args:
        t_init: initial t; default ln 10 (logit scale 10), as in the paper.
        bias_init: initial b as a number (default -10, the paper's), or "batch" for `batch_bias_init(batch_size)`.
        batch_size: the *global effective* batch size (all ranks, all accumulated micro-batches), i.e. the number of
            texts each image is contrasted with; required for bias_init="batch".
        learnable: register t and b as parameters (else buffers).
        chunk_size: column chunk size (memory O(B * chunk)); None for the direct form.
        dist_mode: "auto" (gather across ranks when a process group with >1 process exists, else local),
            "gather" (autograd all-gather; default for gloo), "ring" (neighbour exchange, intended for NCCL), or
            "local" (ignore other ranks).
    """

    def __init__(
        self,
        t_init: float = LN10,
        bias_init: float | Literal["batch"] = -10.0,
        *,
        batch_size: int | None = None,
        learnable: bool = True,
        chunk_size: int | None = None,
        dist_mode: DistMode = "auto",
        group=None,
    ):
        super().__init__()
        if bias_init == "batch":
            if batch_size is None:
                raise LossInputError("bias_init='batch' needs batch_size (the global effective batch size)")
            b0 = batch_bias_init(batch_size)
        elif isinstance(bias_init, str):
            raise LossInputError(f"bias_init must be a number or 'batch', got {bias_init!r}")
        else:
            b0 = float(bias_init)
        if dist_mode not in ("auto", "gather", "ring", "local"):
            raise LossInputError(f"dist_mode must be auto, gather, ring or local, got {dist_mode!r}")
        t0 = torch.tensor(float(t_init))
        b0_t = torch.tensor(b0)
        if learnable:
            self.t = nn.Parameter(t0)
            self.b = nn.Parameter(b0_t)
        else:
            self.register_buffer("t", t0)
            self.register_buffer("b", b0_t)
        self.chunk_size = chunk_size
        self.dist_mode = dist_mode
        self.group = group
        self._logged_negatives: int | None = None

    def extra_repr(self) -> str:
        return f"t={self.t.item():.4f}, b={self.b.item():.4f}, chunk_size={self.chunk_size}, dist_mode={self.dist_mode}"

    def forward(self, img_emb: torch.Tensor, txt_emb: torch.Tensor) -> SiglipOutput:
        mode = self.dist_mode
        if mode != "local" and dist_active(self.group):
            out = siglip_loss_distributed(
                img_emb, txt_emb, self.t, self.b, mode="gather" if mode == "auto" else mode,
                chunk_size=self.chunk_size, group=self.group,
            )
        else:
            out = siglip_loss(img_emb, txt_emb, self.t, self.b, chunk_size=self.chunk_size)
        if out.num_negatives != self._logged_negatives:
            # once per change: a silently small negative set is the usual reason contrastive training stalls
            log.info("SigLIP: global batch %d, %d negatives per image", out.batch_size, out.num_negatives)
            self._logged_negatives = out.num_negatives
        return out
