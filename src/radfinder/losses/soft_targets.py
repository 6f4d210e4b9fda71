"""Soft-target weights for `soft_contrastive_loss` (our SCALE-VLP-style formulation, docs/soft_contrastive.md):

    W = alpha * I + beta * W_spatial + gamma * W_knowledge

W_knowledge: `radfinder.text.ontology.knowledge_similarity` of the studies' report-derived finding labels.
W_spatial: Jaccard similarity of the sets of anatomies each report calls abnormal (the per-anatomy sentence
assignment of `radfinder.text.anatomy`); two studies with no abnormal anatomy get `empty`. Where both studies have
slice references, the Jaccard similarity of their referenced depth bins is averaged in (`depth_bins`: per study a
set of bin indices in a frame shared across patients, e.g. the referenced depth as a fraction of the scan or lung
extent cut into 10 bins; None for a study without references). The loss divides each row (and each row of W^T)
by its sum, so W needs no normalisation here; `normalize=True` returns it row-normalised for inspection.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def spatial_similarity(
    abnormal_anatomies: Any, empty: float = 1.0, depth_bins: Sequence[set[int] | None] | None = None
) -> np.ndarray:
    """Jaccard of the abnormal-anatomy sets, (N, A) bool (anatomy a of study n described as abnormal), averaged
    with the Jaccard of referenced depth bins for the pairs where both studies have references (see module doc)."""
    s = set_jaccard(abnormal_anatomies, empty)
    if depth_bins is None:
        return s
    if len(depth_bins) != s.shape[0]:
        raise LossInputError(f"depth_bins needs one entry per study ({s.shape[0]}), got {len(depth_bins)}")
    has = np.array([b is not None and len(b) > 0 for b in depth_bins])
    if not has.any():
        return s
    k = 1 + max(max(b) for b in depth_bins if b)
    flags = np.zeros((len(depth_bins), k), bool)
    for i, b in enumerate(depth_bins):
        if b:
            flags[i, sorted(b)] = True
    both = has[:, None] & has[None, :]
    return np.where(both, (s + set_jaccard(flags, empty)) / 2, s)


def soft_targets(
    batch_size: int,
    *,
    alpha: float = 1.0,
    beta: float = 0.0,
    gamma: float = 0.0,
    spatial: Any = None,
    knowledge: Any = None,
    normalize: bool = False,
) -> torch.Tensor:
    """alpha * I + beta * spatial + gamma * knowledge as a float64 (B, B) tensor (see module doc)."""
    if min(alpha, beta, gamma) < 0 or alpha + beta + gamma <= 0:
        raise LossInputError(f"alpha, beta, gamma must be >= 0 and not all 0, got {alpha}, {beta}, {gamma}")
    w = alpha * np.eye(batch_size)
    for coef, m, name in ((beta, spatial, "spatial"), (gamma, knowledge, "knowledge")):
        if coef == 0:
            continue
        if m is None:
            raise LossInputError(f"{name} similarity is needed when its weight is > 0")
        m = np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m, dtype=np.float64)
        if m.shape != (batch_size, batch_size) or (m < 0).any() or not np.isfinite(m).all():
            raise LossInputError(f"{name} similarity must be a finite non-negative ({batch_size}, {batch_size}) matrix")
        w = w + coef * m
    if (w.sum(1) <= 0).any():
        raise LossInputError("a row of the soft targets sums to 0; use alpha > 0")
    if normalize:
        w = w / w.sum(1, keepdims=True)
    return torch.from_numpy(w)


def report_soft_targets(
    labels: Any,
    names: Sequence[str],
    abnormal_anatomies: Any = None,
    *,
    alpha: float = 1.0,
    beta: float = 0.5,
    gamma: float = 0.5,
    ontology: Ontology | None = None,
) -> torch.Tensor:
    """Soft targets of a batch from its reports alone: labels (N, F) from the report labeler and, for the spatial
    term, the per-anatomy abnormal flags (N, A) of the per-anatomy texts."""
    n = int(np.asarray(labels).shape[0])
    k = knowledge_similarity(labels, names, ontology) if gamma else None
    s = spatial_similarity(abnormal_anatomies) if beta else None
    return soft_targets(n, alpha=alpha, beta=beta, gamma=gamma, spatial=s, knowledge=k)
