"""Merlin-style pool retrieval: recall@k inside small random pools.

For each pool size s and each of `n_repeats` repeats, the N pairs are shuffled and cut into floor(N / s)
non-overlapping pools of s pairs (the remainder is left out of that repeat). Inside a pool each text ranks the
s volumes (cosine of L2-normalised embeddings, ties resolved against the query as in
`radfinder.eval.retrieval`); recall@k of the repeat is the fraction of all pooled queries whose own volume is
in the top k. The reported value is the mean and the population standard deviation (ddof=0) over repeats.

Seeding: each pool size uses its own ``numpy.random.default_rng(seed)``, so its pools do not depend on which
other sizes are requested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radfinder.eval._common import EvalInputError, as_numpy, check_finite, clean_number, l2_normalize

DEFAULT_POOL_SIZES: tuple[int, ...] = (32, 64, 128)
DEFAULT_POOL_KS: tuple[int, ...] = (1, 8)
_FULL_SIM_MAX = 8192


@dataclass
class PoolRetrievalResult:
    direction: str
    n_pairs: int
    n_repeats: int
    seed: int
    pool_sizes: tuple[int, ...]
    ks: tuple[int, ...]
    per_repeat: dict[int, np.ndarray] = field(repr=False)  # pool size -> (n_repeats, K) recalls

    def mean(self, pool_size: int, k: int) -> float:
        return float(self.per_repeat[pool_size][:, self.ks.index(k)].mean())

    def std(self, pool_size: int, k: int) -> float:
        return float(self.per_repeat[pool_size][:, self.ks.index(k)].std())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "direction": self.direction,
            "n_pairs": self.n_pairs,
            "n_repeats": self.n_repeats,
            "seed": self.seed,
            "pools": {},
        }
        for s in self.pool_sizes:
            out["pools"][str(s)] = {
                "n_pools": self.n_pairs // s,
                "chance": {f"R@{k}": min(k, s) / s for k in self.ks},
                **{
                    f"R@{k}": {"mean": clean_number(self.mean(s, k)), "std": clean_number(self.std(s, k))}
                    for k in self.ks
                },
            }
        return out


def pool_retrieval(
    text_emb: Any,
    volume_emb: Any,
    *,
    pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES,
    ks: Sequence[int] = DEFAULT_POOL_KS,
    n_repeats: int = 100,
    seed: int = 42,
    direction: str = "text_to_volume",
) -> PoolRetrievalResult:
    """Pool recall@k; row i of `text_emb` pairs with row i of `volume_emb`. `direction` is "text_to_volume" (the
    reported one) or "volume_to_text"."""
    text = l2_normalize(as_numpy(text_emb, name="text embeddings"))
    vol = l2_normalize(as_numpy(volume_emb, name="volume embeddings"))
    if text.ndim != 2 or text.shape != vol.shape:
        raise EvalInputError(f"pool retrieval needs paired 2D embeddings of equal shape, got {text.shape}, {vol.shape}")
    check_finite(text, "text embeddings")
    check_finite(vol, "volume embeddings")
    if direction == "text_to_volume":
        query, gallery = text, vol
    elif direction == "volume_to_text":
        query, gallery = vol, text
    else:
        raise EvalInputError(f"direction must be text_to_volume or volume_to_text, got {direction!r}")
    n = query.shape[0]
    ks = tuple(int(k) for k in ks)
    sizes = tuple(int(s) for s in pool_sizes)
    if any(s < 1 or s > n for s in sizes):
        raise EvalInputError(f"pool sizes {sizes} must lie in 1..{n} (number of pairs)")
    full = query @ gallery.T if n <= _FULL_SIM_MAX else None  # (n, n) float64; pools gather from it
    per_repeat: dict[int, np.ndarray] = {}
    for s in sizes:
        rng = np.random.default_rng(seed)
        n_pools = n // s
        out = np.empty((n_repeats, len(ks)))
        for r in range(n_repeats):
            idx = rng.permutation(n)[: n_pools * s].reshape(n_pools, s)
            if full is not None:
                sim = full[idx[:, :, None], idx[:, None, :]]  # (P, s, s): [pool, query, item]
            else:
                sim = np.stack([query[p] @ gallery[p].T for p in idx])
            own = np.diagonal(sim, axis1=1, axis2=2)  # (P, s)
            # pessimistic ties: every other item scoring >= the own item is ranked above it
            ranks = np.sum(sim >= own[..., None], axis=2)  # counts the own item too -> 1-based rank
            out[r] = [(ranks <= k).mean() for k in ks]
        per_repeat[s] = out
    return PoolRetrievalResult(direction, n, int(n_repeats), int(seed), sizes, ks, per_repeat)
