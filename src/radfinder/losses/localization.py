"""Intra-scan localization loss (SPEC 7, "Gaussian localization").

For snippet s, the slice embeddings e_{s,d} of its own scan (depth cells d) compete in a softmax over depth:

    logit_{s,d} = cos(e_{s,d}, u_s) * (1/tau)       (invalid d -> -inf)
    target_s    = one-hot at d*, blurred by a Gaussian (sigma cells), renormalised, zeroed outside the valid cells
    loss        = mean_s  -sum_d target_{s,d} * log_softmax(logit_s)_d

Negatives are the other depths of the same scan only. The target is *not* renormalised after the masking, so a
target near the edge of the valid range keeps less than unit mass, exactly as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import LossInputError, check_shape
from .siglip import normalize

TARGET_EPS = 1e-8


def gaussian_kernel(sigma: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1D Gaussian taps for x = -r..r with r = max(int(3*sigma + 0.5), 1) (r = 6 for sigma = 2)."""
    if sigma <= 0:
        raise LossInputError(f"gaussian_kernel needs sigma > 0, got {sigma}")
    radius = max(int(3.0 * sigma + 0.5), 1)
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def soft_depth_target(target_depth_mask: torch.Tensor, valid_depth_mask: torch.Tensor, sigma: float,
                      dtype=torch.float32) -> torch.Tensor:
    """(S, D) soft target: one-hot -> Gaussian blur (zero padding) -> renormalise -> zero invalid cells."""
    onehot = target_depth_mask.to(dtype)
    target = onehot / (onehot.sum(-1, keepdim=True) + TARGET_EPS)
    if sigma > 0:
        k = gaussian_kernel(sigma, dtype=dtype, device=target.device)
        r = (k.numel() - 1) // 2
        target = F.conv1d(target[:, None, :], k.view(1, 1, -1), padding=r)[:, 0, :]
        target = target / (target.sum(-1, keepdim=True) + TARGET_EPS)
        target = target.masked_fill(~valid_depth_mask, 0.0)
    return target


def _check_inputs(slice_emb, snippet_emb, target_depth_mask, valid_depth_mask) -> None:
    check_shape("slice_emb", slice_emb, 3, "(S, D, E)")
    check_shape("snippet_emb", snippet_emb, 2, "(S, E)")
    check_shape("target_depth_mask", target_depth_mask, 2, "(S, D) bool")
    check_shape("valid_depth_mask", valid_depth_mask, 2, "(S, D) bool")
    s, d, e = slice_emb.shape
    if snippet_emb.shape != (s, e):
        raise LossInputError(f"snippet_emb must be (S, E) = {(s, e)}, got {tuple(snippet_emb.shape)}")
    for name, m in (("target_depth_mask", target_depth_mask), ("valid_depth_mask", valid_depth_mask)):
        if m.dtype != torch.bool:
            raise LossInputError(f"{name} must be a bool tensor, got {m.dtype}")
        if m.shape != (s, d):
            raise LossInputError(f"{name} must be (S, D) = {(s, d)}, got {tuple(m.shape)}")
    if s == 0:
        return
    # one host sync; a bad target silently gives a wrong loss, which is far costlier to debug
    bad_count = target_depth_mask.sum(-1) != 1
    outside = (target_depth_mask & ~valid_depth_mask).any(-1)
    bad = bad_count | outside
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()[:8]
        raise LossInputError(
            f"target_depth_mask must have exactly one True per snippet, inside valid_depth_mask; "
            f"rows {rows} do not"
        )


def gaussian_localization_loss(
    slice_emb: torch.Tensor,
    snippet_emb: torch.Tensor,
    target_depth_mask: torch.Tensor,
    valid_depth_mask: torch.Tensor,
    sigma: float = 2.0,
    tau: float = 0.1,
) -> torch.Tensor:
    """Soft cross-entropy over depth (module doc). sigma = 0 uses the one-hot target; embeddings are normalised here.

    slice_emb (S, D, E): per snippet, the depth-cell embeddings of its scan (repeat a scan's rows per snippet);
    snippet_emb (S, E); target_depth_mask (S, D) bool, one True inside the valid cells; valid_depth_mask (S, D).
    Returns the mean over snippets (a 0-d tensor; an empty S gives 0 connected to the graph).
    """
    _check_inputs(slice_emb, snippet_emb, target_depth_mask, valid_depth_mask)
    if tau <= 0:
        raise LossInputError(f"tau must be > 0, got {tau}")
    if sigma < 0:
        raise LossInputError(f"sigma must be >= 0, got {sigma}")
    if slice_emb.shape[0] == 0:
        return (slice_emb.sum() + snippet_emb.sum()) * 0.0
    cos = torch.einsum("sde,se->sd", normalize(slice_emb), normalize(snippet_emb))
    # multiply by the reciprocal as the reference does (SPEC 13.6): `cos / tau` differs in the last bit
    logits = (cos * (1.0 / tau)).masked_fill(~valid_depth_mask, float("-inf"))
    logp = torch.log_softmax(logits, dim=-1).masked_fill(~valid_depth_mask, 0.0)  # avoids 0 * -inf = nan
    target = soft_depth_target(target_depth_mask, valid_depth_mask, sigma, dtype=logp.dtype)
    return -(target * logp).sum(-1).mean()


def depth_index_to_mask(target_index: torch.Tensor, depth: int) -> torch.Tensor:
    """(S,) integer depth indices -> (S, D) one-hot bool mask."""
    if target_index.dtype.is_floating_point or target_index.dtype == torch.bool or target_index.ndim != 1:
        raise LossInputError(f"target_index must be a 1D integer tensor, got {target_index.dtype} "
                             f"{tuple(target_index.shape)}")
    if target_index.numel() and (int(target_index.min()) < 0 or int(target_index.max()) >= depth):
        raise LossInputError(f"target_index values must be in [0, {depth}), got "
                             f"[{int(target_index.min())}, {int(target_index.max())}]")
    return F.one_hot(target_index.long(), depth).bool()


def gaussian_localization_loss_from_index(
    slice_emb: torch.Tensor,
    snippet_emb: torch.Tensor,
    target_index: torch.Tensor,
    valid_depth_mask: torch.Tensor,
    sigma: float = 2.0,
    tau: float = 0.1,
) -> torch.Tensor:
    """`gaussian_localization_loss` with the target given as (S,) integer depth indices."""
    mask = depth_index_to_mask(target_index, slice_emb.shape[1]).to(slice_emb.device)
    return gaussian_localization_loss(slice_emb, snippet_emb, mask, valid_depth_mask, sigma=sigma, tau=tau)


class GaussianLocalizationLoss(nn.Module):
    """Module form with fixed sigma (cells) and tau; the target may be a bool mask or integer indices."""

    def __init__(self, sigma: float = 2.0, tau: float = 0.1):
        super().__init__()
        if tau <= 0 or sigma < 0:
            raise LossInputError(f"need sigma >= 0 and tau > 0, got sigma={sigma}, tau={tau}")
        self.sigma, self.tau = float(sigma), float(tau)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, tau={self.tau}"

    def forward(self, slice_emb, snippet_emb, target, valid_depth_mask) -> torch.Tensor:
        if target.dtype == torch.bool:
            return gaussian_localization_loss(slice_emb, snippet_emb, target, valid_depth_mask, self.sigma, self.tau)
        return gaussian_localization_loss_from_index(
            slice_emb, snippet_emb, target, valid_depth_mask, self.sigma, self.tau
        )
