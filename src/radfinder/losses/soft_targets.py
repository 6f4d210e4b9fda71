"""Soft-target weights for `soft_contrastive_loss` (our SCALE-VLP-style formulation, docs/soft_contrastive.md):

    M = beta * S + gamma * K        with the diagonals of S and K set to 0, and the rows and columns of studies
                                    whose labels are all unknown set to 0 (`known`)
    W = alpha * I + (1 - alpha) * rownorm(M)      (image-to-text targets, each row sums to 1)
    W_t2i = alpha * I + (1 - alpha) * rownorm(M^T)   (text-to-image targets; equal to W when S and K are symmetric)

A row of M without mass (no other study of the batch is similar, or the study's labels are unknown) gets all its
weight on the diagonal. So the true pair holds exactly `alpha` of every row that has similar studies, whatever the
batch size; `alpha * I + beta * S + gamma * K` used directly would let the dense similarity of the other studies
(two normal studies have S = K = 1) dilute the true pair as the batch grows.

K: `radfinder.text.ontology.knowledge_similarity` of the studies' report-derived finding labels.
S (`spatial_similarity`): the Jaccard similarity of the sets of anatomies each report calls abnormal (the
per-anatomy sentence assignment of `radfinder.text.anatomy`; `empty` when neither has one), mixed with a volumetric
term where the volume allows it (`VolumeProfiles`, built by `radfinder.features.volume_profile`): the overlap of the
masks of the organs each report calls abnormal, and of the depth cells each report cites, in a frame shared across
patients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..text.ontology import Ontology, knowledge_similarity
from ._validate import LossInputError


def set_jaccard(flags: Any, empty: float = 1.0) -> np.ndarray:
    """(N, N) Jaccard similarity of the rows of a (N, K) boolean matrix; `empty` where both rows are all False."""
    f = np.asarray(flags, dtype=bool)
    if f.ndim != 2:
        raise LossInputError(f"flags must be (N, K), got shape {f.shape}")
    x = f.astype(np.float64)
    inter = x @ x.T
    union = x.sum(1)[:, None] + x.sum(1)[None, :] - inter
    out = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    out[union == 0] = empty
    return out


def profile_overlap(profiles: Any) -> np.ndarray:
    """(N, N) weighted Jaccard sum_k min(p_k, q_k) / sum_k max(p_k, q_k) of non-negative (N, K) profiles, each
    scaled to sum 1 first (so the overlap compares where the mass lies, not how much of it there is); 0 where a
    profile is all zero."""
    p = np.asarray(profiles, dtype=np.float64)
    if p.ndim != 2 or (p < 0).any() or not np.isfinite(p).all():
        raise LossInputError(f"profiles must be a finite non-negative (N, K) array, got shape {p.shape}")
    tot = p.sum(1, keepdims=True)
    p = np.divide(p, tot, out=np.zeros_like(p), where=tot > 0)
    lo = np.minimum(p[:, None, :], p[None, :, :]).sum(-1)
    hi = np.maximum(p[:, None, :], p[None, :, :]).sum(-1)
    return np.divide(lo, hi, out=np.zeros_like(lo), where=hi > 0)


@dataclass
class VolumeProfiles:
    """Per study of a batch, what its volume says about where its report's findings lie (`radfinder.features.
    volume_profile`): `organs` (N, G) the voxels of the organs the report calls abnormal over G cells of the box
    around all its segmented organs; `cited` (N, Z) the depth cells its report cites (mined references) over Z depth
    bins of the same box (of the scan without a segmentation). `has_organs` / `has_cited` (N,) say where each is
    known; a part enters a pair's similarity only where both studies have it."""

    organs: np.ndarray
    has_organs: np.ndarray
    cited: np.ndarray
    has_cited: np.ndarray

    def __post_init__(self) -> None:
        self.organs = np.asarray(self.organs, np.float64)
        self.cited = np.asarray(self.cited, np.float64)
        self.has_organs = np.asarray(self.has_organs, bool)
        self.has_cited = np.asarray(self.has_cited, bool)
        n = self.organs.shape[0]
        if not (self.cited.shape[0] == self.has_organs.shape[0] == self.has_cited.shape[0] == n):
            raise LossInputError("volume profiles need one row per study in every part")

    def __len__(self) -> int:
        return int(self.organs.shape[0])

    def similarity(self) -> tuple[np.ndarray, np.ndarray]:
        """((N, N) mean of the parts both studies have, (N, N) bool: at least one such part)."""
        total = np.zeros((len(self), len(self)))
        count = np.zeros((len(self), len(self)))
        for prof, has in ((self.organs, self.has_organs), (self.cited, self.has_cited)):
            both = has[:, None] & has[None, :]
            if both.any():
                total += np.where(both, profile_overlap(prof), 0.0)
                count += both
        return np.divide(total, count, out=np.zeros_like(total), where=count > 0), count > 0


def spatial_similarity(
    abnormal_anatomies: Any, empty: float = 1.0, volume: VolumeProfiles | None = None, volume_weight: float = 0.5
) -> np.ndarray:
    """Jaccard of the abnormal-anatomy sets, (N, A) bool (anatomy a of study n described as abnormal); where both
    studies of a pair have a volumetric part (`volume`), `(1 - volume_weight) * Jaccard + volume_weight * overlap`."""
    s = set_jaccard(abnormal_anatomies, empty)
    if volume is None or volume_weight == 0:
        return s
    if not 0 <= volume_weight <= 1:
        raise LossInputError(f"volume_weight must be in [0, 1], got {volume_weight}")
    if len(volume) != s.shape[0]:
        raise LossInputError(f"volume profiles need one row per study ({s.shape[0]}), got {len(volume)}")
    v, has = volume.similarity()
    return np.where(has, (1 - volume_weight) * s + volume_weight * v, s)


def _similarity(m: Any, n: int, name: str) -> np.ndarray:
    if m is None:
        raise LossInputError(f"{name} similarity is needed when its weight is > 0")
    m = np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m, dtype=np.float64)
    if m.shape != (n, n) or (m < 0).any() or not np.isfinite(m).all():
        raise LossInputError(f"{name} similarity must be a finite non-negative ({n}, {n}) matrix")
    return m


def _with_true_pair(m: np.ndarray, alpha: float) -> np.ndarray:
    mass = m.sum(1, keepdims=True)
    off = np.divide(m, mass, out=np.zeros_like(m), where=mass > 0)
    w = (1 - alpha) * off
    diag = np.where(mass[:, 0] > 0, alpha, 1.0)
    w[np.diag_indices_from(w)] = diag
    return w


def soft_target_pair(
    batch_size: int,
    *,
    alpha: float = 0.5,
    beta: float = 0.0,
    gamma: float = 0.0,
    spatial: Any = None,
    knowledge: Any = None,
    known: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image-to-text W, text-to-image W_t2i) as float64 (B, B) tensors whose rows sum to 1 (module doc).
    `known` (B,) bool: False for a study whose labels are all unknown (left out of S and K); None: all known."""
    if not 0 <= alpha <= 1 or min(beta, gamma) < 0:
        raise LossInputError(f"need 0 <= alpha <= 1 and beta, gamma >= 0, got {alpha}, {beta}, {gamma}")
    n = int(batch_size)
    m = np.zeros((n, n))
    for coef, sim, name in ((beta, spatial, "spatial"), (gamma, knowledge, "knowledge")):
        if coef > 0:
            m = m + coef * _similarity(sim, n, name)
    np.fill_diagonal(m, 0.0)
    if known is not None:
        k = np.asarray(known, dtype=bool).reshape(-1)
        if k.shape != (n,):
            raise LossInputError(f"known needs one flag per study ({n}), got shape {k.shape}")
        m = m * (k[:, None] & k[None, :])
    return torch.from_numpy(_with_true_pair(m, alpha)), torch.from_numpy(_with_true_pair(m.T.copy(), alpha))


def soft_targets(batch_size: int, **kwargs: Any) -> torch.Tensor:
    """The image-to-text targets W of `soft_target_pair` (the same arguments)."""
    return soft_target_pair(batch_size, **kwargs)[0]


def labels_known(labels: Any) -> np.ndarray:
    """(N,) bool: the study has at least one known label (labels are 1 / 0, and -1 for unknown)."""
    y = np.asarray(labels)
    return (y >= 0).any(axis=1)


def report_soft_targets(
    labels: Any,
    names: Sequence[str],
    abnormal_anatomies: Any = None,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 0.5,
    volume: VolumeProfiles | None = None,
    volume_weight: float = 0.5,
    ontology: Ontology | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets (image-to-text, text-to-image) of a batch: labels (N, F) from the report labeler, for the
    spatial term the per-anatomy abnormal flags (N, A) of the per-anatomy texts and optionally the volume profiles;
    studies whose labels are all unknown keep only their true pair."""
    n = int(np.asarray(labels).shape[0])
    k = knowledge_similarity(labels, names, ontology) if gamma else None
    s = spatial_similarity(abnormal_anatomies, volume=volume, volume_weight=volume_weight) if beta else None
    return soft_target_pair(n, alpha=alpha, beta=beta, gamma=gamma, spatial=s, knowledge=k,
                            known=labels_known(labels))  # fmt: skip
