"""Cross-modal retrieval (text-to-volume and volume-to-text) from two embedding matrices.

Similarity is the cosine of L2-normalised embeddings (computed in float64). The ground truth of query i is
gallery item i, unless `positives` says otherwise (several volumes per report, duplicate reports, ...).

Rank and ties: the rank of a query is ``1 + #{non-positive items j : sim_j >= max over positives of sim}``, i.e.
the position of its best positive when every tie with a non-positive item is resolved *against* the query
(pessimistic). It depends on neither the order of the gallery nor the floating-point order of a sort, and a
degenerate model (all embeddings equal) gets rank N, never rank 1. Recall@k is the fraction of queries with
rank <= k.

Chance recall@k for a query with p positives in a gallery of N is 1 - C(N-p, k) / C(N, k) (k/N for p = 1),
averaged over queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import gammaln

from radfinder.eval._common import EvalInputError, as_numpy, check_finite, ci_dict, clean_number, l2_normalize
from radfinder.eval.bootstrap import DEFAULT_N_BOOT, bootstrap_counts, percentile_ci, weighted_median

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 50, 100)
_ROW_CHUNK = 1024


def cosine_similarity(a: Any, b: Any) -> np.ndarray:
    """(n_a, n_b) cosine similarities of the rows of two embedding matrices (float64)."""
    a = l2_normalize(as_numpy(a, name="query embeddings"))
    b = l2_normalize(as_numpy(b, name="gallery embeddings"))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise EvalInputError(f"embeddings must be 2D with equal width, got {a.shape} and {b.shape}")
    check_finite(a, "query embeddings")
    check_finite(b, "gallery embeddings")
    return a @ b.T


def positives_matrix(positives: Any, n_query: int, n_gallery: int) -> np.ndarray:
    """Boolean (n_query, n_gallery) relevance matrix.

    `positives` may be None (identity: query i <-> item i, needs n_query == n_gallery), a boolean matrix, or a
    sequence with, per query, an int or an iterable of gallery indices.
    """
    if positives is None:
        if n_query != n_gallery:
            raise EvalInputError(
                f"without `positives` query i matches item i, so both sides need the same count "
                f"(got {n_query} queries, {n_gallery} items)"
            )
        return np.eye(n_query, dtype=bool)
    if hasattr(positives, "detach"):  # torch tensor
        positives = positives.detach().cpu().numpy()
    if isinstance(positives, np.ndarray) and positives.ndim == 2:
        if positives.shape != (n_query, n_gallery):
            raise EvalInputError(f"positives matrix shape {positives.shape} != {(n_query, n_gallery)}")
        mat = positives.astype(bool)
    else:
        if len(positives) != n_query:
            raise EvalInputError(f"positives has {len(positives)} entries for {n_query} queries")
        mat = np.zeros((n_query, n_gallery), dtype=bool)
        for i, p in enumerate(positives):
            idx = np.atleast_1d(np.asarray(p, dtype=np.int64))
            if idx.size and (idx.min() < 0 or idx.max() >= n_gallery):
                raise EvalInputError(f"positives[{i}] has an index outside 0..{n_gallery - 1}")
            mat[i, idx] = True
    empty = np.flatnonzero(~mat.any(axis=1))
    if empty.size:
        raise EvalInputError(f"{empty.size} queries have no positive item (first: query {int(empty[0])})")
    return mat


def positives_from_keys(query_keys: Sequence[Any], gallery_keys: Sequence[Any]) -> np.ndarray:
    """Relevance matrix where query i and item j are positive iff their keys are equal (e.g. a report key shared
    by several reconstructions of a study)."""
    q = np.asarray([str(k) for k in query_keys])
    g = np.asarray([str(k) for k in gallery_keys])
    return q[:, None] == g[None, :]


def retrieval_ranks(similarity: np.ndarray, positives: Any = None) -> np.ndarray:
    """1-based rank of each query's best positive, ties resolved pessimistically (see module docstring)."""
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2:
        raise EvalInputError(f"similarity must be 2D, got shape {sim.shape}")
    check_finite(sim, "similarity")
    pos = positives_matrix(positives, *sim.shape)
    ranks = np.empty(sim.shape[0], dtype=np.int64)
    for start in range(0, sim.shape[0], _ROW_CHUNK):
        s = sim[start : start + _ROW_CHUNK]
        p = pos[start : start + _ROW_CHUNK]
        best = np.where(p, s, -np.inf).max(axis=1)
        ranks[start : start + _ROW_CHUNK] = 1 + np.sum((s >= best[:, None]) & ~p, axis=1)
    return ranks


def chance_recall(n_gallery: int, k: int, n_positives: np.ndarray | int = 1) -> float:
    """Expected recall@k of a random ranking: mean over queries of 1 - C(N-p, k)/C(N, k)."""
    p = np.atleast_1d(np.asarray(n_positives, dtype=np.float64))
    n = float(n_gallery)
    k = min(int(k), n_gallery)
    with np.errstate(invalid="ignore"):
        log_miss = gammaln(n - p + 1) - gammaln(n - p - k + 1) - gammaln(n + 1) + gammaln(n - k + 1)
    miss = np.where(n - p >= k, np.exp(log_miss), 0.0)
    return float(np.mean(1.0 - miss))


@dataclass
class RetrievalResult:
    """Retrieval metrics for one direction. Recalls are fractions in [0, 1]; ranks are 1-based."""

    direction: str
    n_queries: int
    n_gallery: int
    ranks: np.ndarray = field(repr=False)
    recall: dict[int, float]
    chance: dict[int, float]
    median_rank: float
    mean_rank: float
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    ci_level: float = 0.95
    n_boot: int = 0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "n_queries": self.n_queries,
            "n_gallery": self.n_gallery,
            "recall": {f"R@{k}": clean_number(v) for k, v in self.recall.items()},
            "chance": {f"R@{k}": clean_number(v) for k, v in self.chance.items()},
            "median_rank": clean_number(self.median_rank),
            # the median rank as a share of the gallery: unlike R@k against chance, a bigger gallery does not
            # flatter it (a random ranking gives about 0.5 whatever the gallery size)
            "median_rank_over_gallery": clean_number(self.median_rank / self.n_gallery if self.n_gallery else None),
            "chance_median_rank_over_gallery": clean_number((self.n_gallery + 1) / 2 / self.n_gallery
                                                            if self.n_gallery else None),
            "mean_rank": clean_number(self.mean_rank),
            "ci": {name: ci_dict(v) for name, v in self.ci.items()},
            "ci_level": self.ci_level,
            "n_boot": self.n_boot,
            "seed": self.seed,
        }


def metrics_from_ranks(
    ranks: np.ndarray,
    n_gallery: int,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    n_positives: np.ndarray | int = 1,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    ci_level: float = 0.95,
    direction: str = "query_to_gallery",
) -> RetrievalResult:
    """Recall@k, median/mean rank, chance recall and percentile-bootstrap CIs (queries resampled; `n_boot=0`
    skips the CIs) from per-query ranks."""
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.ndim != 1 or ranks.size == 0:
        raise EvalInputError("ranks must be a non-empty 1D array")
    ks = tuple(int(k) for k in ks)
    hits = np.stack([ranks <= k for k in ks], axis=1).astype(np.float64)  # (n, K)
    result = RetrievalResult(
        direction=direction,
        n_queries=int(ranks.size),
        n_gallery=int(n_gallery),
        ranks=ranks,
        recall={k: float(hits[:, i].mean()) for i, k in enumerate(ks)},
        chance={k: chance_recall(n_gallery, k, n_positives) for k in ks},
        median_rank=float(np.median(ranks)),
        mean_rank=float(np.mean(ranks)),
        ci_level=ci_level,
        n_boot=int(n_boot),
        seed=int(seed),
    )
    if n_boot > 0:
        n = ranks.size
        rec, med, mean = [], [], []
        for w in bootstrap_counts(n, n_boot, seed):
            wf = w.astype(np.float64)
            rec.append(wf @ hits / n)
            mean.append(wf @ ranks / n)
            med.append(weighted_median(ranks, w))
        rec_all = np.concatenate(rec)
        for i, k in enumerate(ks):
            result.ci[f"R@{k}"] = percentile_ci(rec_all[:, i], ci_level)
        result.ci["median_rank"] = percentile_ci(np.concatenate(med), ci_level)
        result.ci["mean_rank"] = percentile_ci(np.concatenate(mean), ci_level)
    return result


def retrieval_metrics(
    query_emb: Any,
    gallery_emb: Any,
    positives: Any = None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    ci_level: float = 0.95,
    direction: str = "query_to_gallery",
) -> RetrievalResult:
    """Rank the gallery for every query by cosine similarity and summarise (see `metrics_from_ranks`)."""
    sim = cosine_similarity(query_emb, gallery_emb)
    pos = positives_matrix(positives, *sim.shape)
    ranks = retrieval_ranks(sim, pos)
    return metrics_from_ranks(
        ranks,
        sim.shape[1],
        ks=ks,
        n_positives=pos.sum(axis=1),
        n_boot=n_boot,
        seed=seed,
        ci_level=ci_level,
        direction=direction,
    )


def bidirectional_retrieval(
    text_emb: Any,
    volume_emb: Any,
    positives: Any = None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    ci_level: float = 0.95,
) -> dict[str, RetrievalResult]:
    """Text-to-volume and volume-to-text retrieval. `positives` is given text-major ((n_text, n_volume) or a
    per-text list of volume indices); the volume-to-text direction uses its transpose."""
    text = as_numpy(text_emb, name="text embeddings")
    vol = as_numpy(volume_emb, name="volume embeddings")
    pos = positives_matrix(positives, text.shape[0], vol.shape[0])
    common = dict(ks=ks, n_boot=n_boot, seed=seed, ci_level=ci_level)
    return {
        "text_to_volume": retrieval_metrics(text, vol, pos, direction="text_to_volume", **common),
        "volume_to_text": retrieval_metrics(vol, text, pos.T.copy(), direction="volume_to_text", **common),
    }


def recall_curve(ranks: np.ndarray, max_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k, recall@k) for k = 1..max_k, for plotting."""
    ranks = np.asarray(ranks)
    k = np.arange(1, int(max_k) + 1)
    counts = np.bincount(np.minimum(ranks, max_k + 1), minlength=max_k + 2)[1 : max_k + 1]
    return k, np.cumsum(counts) / ranks.size
