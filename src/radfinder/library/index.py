"""FAISS indexes over L2-normalised embeddings: inner product = cosine similarity.

Kinds:
- `flat`: exact search (`IndexFlatIP`). Reads every vector per query batch: ~2 GB per query at 1,000,000 x 512,
  fine up to a few hundred thousand studies, and batched queries amortise the read.
- `hnsw`: graph index (`IndexHNSWFlat`, M=32, efSearch 128 by default): approximate, single queries in
  milliseconds at millions of vectors; builds slower and holds the vectors plus the graph in memory.
- `ivf`: inverted lists with product quantisation and exact re-ranking (`IVFk,PQm` + `IndexRefineFlat`): the
  smallest memory for very large libraries; needs a training sample (>= 39 x lists vectors).
- `auto`: `flat` below `AUTO_CROSSOVER` vectors, else `hnsw`. The crossover comes from the memory traffic of exact
  search: one query reads N x dim x 4 bytes (200,000 x 512: 400 MB, a few tens of ms at the ~10-20 GB/s two cores
  stream), which is where single-query latency stops being interactive; `bench/bench_search.py` measures both
  sides on the machine at hand (`--n`), and `library index LIB --index ...` switches any time.

The FAISS file is written atomically; its own binary format is read back (no pickle). Ids are the library's study
row ids (`IndexIDMap2`), so a result is a row of `library.sqlite` directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np

from ..errors import ConfigError
from .store import LibraryError

INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")
AUTO_CROSSOVER = 200_000
HNSW_M = 32
HNSW_EF_SEARCH = 128


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def resolve_kind(kind: str, n: int) -> str:
    kind = str(kind).strip().lower()
    if kind not in INDEX_KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    if kind == "auto":
        return "flat" if n < AUTO_CROSSOVER else "hnsw"
    return kind


def make_index(kind: str, dim: int, n: int, *, nlist: int | None = None, pq_m: int | None = None):
    """An empty (untrained for ivf) FAISS index of `kind` for `n` vectors of `dim`, inner-product metric."""
    kind = resolve_kind(kind, n)
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        base = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = 64
        base.hnsw.efSearch = HNSW_EF_SEARCH
        return faiss.IndexIDMap2(base)
    nlist = nlist or max(1, min(int(4 * np.sqrt(max(n, 1))), max(1, n // 39)))
    pq_m = pq_m or (dim // 8 if dim % 8 == 0 else 1)  # 8 dimensions per 1-byte code
    quant = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFPQ(quant, dim, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    ivf.nprobe = min(nlist, 32)
    refine = faiss.IndexRefineFlat(ivf)
    refine.k_factor = 16
    return faiss.IndexIDMap2(refine)


def build_index(vectors: np.ndarray, ids: np.ndarray, kind: str = "auto", **opts):
    """Index `vectors` (N, dim), normalised here, under `ids` (N,) int64."""
    vectors = normalize(vectors)
    n, dim = vectors.shape
    index = make_index(kind, dim, n, **opts)
    if not index.is_trained:
        if n < 39:
            raise LibraryError(f"an ivf index needs at least 39 vectors to train, got {n} (use --index flat)")
        index.train(vectors)
    if n:
        index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
    return index


def set_search_params(index, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
    base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(base, faiss.IndexHNSWFlat) and ef_search:
        base.hnsw.efSearch = int(ef_search)
    if isinstance(base, faiss.IndexRefineFlat) and nprobe:
        faiss.downcast_index(base.base_index).nprobe = int(nprobe)


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores (Q, k), ids (Q, k)); ids -1 where fewer than k vectors exist."""
    q = normalize(np.atleast_2d(queries))
    k = max(1, min(int(k), max(index.ntotal, 1)))
    return index.search(q, k)


def save_index(index, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)


def load_index(path: Path):
    if not path.is_file():
        raise LibraryError(f"{path}: index missing (run `radfinder library index {path.parent}` to rebuild it)")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise LibraryError(f"{path}: not a readable FAISS index ({exc})") from exc
