"""The window encoder's pre-training objective: dense supervision from segmentation masks.

Targets are, per cell of the encoder's output map, the fraction of each target class (organs of TotalSegmentator,
and lesion classes where masks have them; see `radfinder.data.pretrain_windows`). Four linear heads read what
the frozen features will later be used as, so that each feature type carries the anatomy and the findings:

* dense: every map cell predicts its organ fractions (soft-target BCE) and whether each lesion class is present in
  it (BCE, positives up-weighted: lesions are rare);
* depth: every depth token (`axis2`, one per 12 mm slab) predicts the slab's organ fractions and lesion presence;
* window: `patch_average` predicts the window's organ fractions and lesion presence, `cls` (the max-pooled token)
  lesion presence.

A user runs the same objective on real CT with TotalSegmentator masks (organs only, or with lesion masks of their
own). The heads are thrown away after pre-training.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DensePretrainHeads(nn.Module):
    def __init__(self, feature_dim: int, n_organs: int, n_lesions: int):
        super().__init__()
        self.n_organs, self.n_lesions = int(n_organs), int(n_lesions)
        k = self.n_organs + self.n_lesions
        self.dense = nn.Conv3d(feature_dim, k, 1)
        self.depth = nn.Linear(feature_dim, k)
        self.window = nn.Linear(feature_dim, k)
        self.window_max = nn.Linear(feature_dim, max(1, self.n_lesions))


def _split_bce(logits: torch.Tensor, target: torch.Tensor, n_organs: int, pos_weight: float, dim: int) -> tuple:
    """(organ soft BCE, lesion presence BCE) along class dimension `dim`; a part with no classes is 0."""
    org_l, les_l = logits.split([n_organs, logits.shape[dim] - n_organs], dim=dim)
    org_t, les_t = target.split([n_organs, target.shape[dim] - n_organs], dim=dim)
    zero = logits.sum() * 0.0
    organ = F.binary_cross_entropy_with_logits(org_l, org_t) if n_organs else zero
    if les_l.shape[dim]:
        pw = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
        lesion = F.binary_cross_entropy_with_logits(les_l, (les_t > 0).to(logits.dtype), pos_weight=pw)
    else:
        lesion = zero
    return organ, lesion


def dense_pretrain_loss(
    heads: DensePretrainHeads,
    feature_map: torch.Tensor,
    cls: torch.Tensor,
    patch_average: torch.Tensor,
    axis2: torch.Tensor,
    targets: torch.Tensor,
    lesion_pos_weight: float = 5.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts.

    feature_map (n, F, h, w, d); cls, patch_average (n, F); axis2 (n, d, F); targets (n, K, h, w, d) class fractions
    with the organ classes first (`heads.n_organs`), then the lesion classes."""
    o = heads.n_organs
    if targets.shape[1] != o + heads.n_lesions or targets.shape[2:] != feature_map.shape[2:]:
        raise ValueError(f"targets {tuple(targets.shape)} do not fit the map {tuple(feature_map.shape)} and heads")
    dense_o, dense_l = _split_bce(heads.dense(feature_map.float()), targets, o, lesion_pos_weight, 1)
    slab = torch.cat([targets[:, :o].mean(dim=(2, 3)), targets[:, o:].amax(dim=(2, 3))], dim=1)  # (n, K, d)
    depth_o, depth_l = _split_bce(heads.depth(axis2.float()).transpose(1, 2), slab, o, lesion_pos_weight, 1)
    whole = torch.cat([targets[:, :o].mean(dim=(2, 3, 4)), targets[:, o:].amax(dim=(2, 3, 4))], dim=1)  # (n, K)
    win_o, win_l = _split_bce(heads.window(patch_average.float()), whole, o, lesion_pos_weight, 1)
    parts = {"dense_organ": dense_o, "dense_lesion": dense_l, "depth_organ": depth_o, "depth_lesion": depth_l,
             "window_organ": win_o, "window_lesion": win_l}  # fmt: skip
    if heads.n_lesions:
        pw = torch.tensor(lesion_pos_weight, dtype=torch.float32, device=cls.device)
        parts["max_lesion"] = F.binary_cross_entropy_with_logits(
            heads.window_max(cls.float()), (whole[:, o:] > 0).float(), pos_weight=pw
        )
    total = sum(parts.values())
    return total, parts
