"""FAISS indexes over L2-normalised embeddings: inner product = cosine similarity.

Kinds:
- `flat`: exact search. FAISS `IndexFlatIP` holds the vectors; the search itself is a torch matrix product over
  a zero-copy view of them plus `topk`, in blocks of rows (FAISS's own flat search measured 2-10x slower than the
  BLAS product with its bundled OpenMP on two cores, `bench/bench_search.py`). A query batch reads every vector
  once: ~2 GB at 1,000,000 x 512, ~100 ms for one query, and batches amortise the read (compute-bound from ~100
  queries on).
- `pq`: 4-bit product-quantisation fast scan over all vectors (`IndexPQFastScan`, 2 dimensions per 4-bit code,
  dim / 2 bytes per vector) and exact re-ranking of the best `PQ_K_FACTOR` x k candidates against the stored
  float vectors (`IndexRefineFlat`). Every vector is still scored, only ~16x cheaper, so it keeps its recall on
  vectors without cluster structure, where graph and inverted-list indexes lose it (measured recall@10 1.00 on
  1,000,000 i.i.d. random 512-d vectors at ~15 ms a query; HNSW reached 0.10). Memory: the float vectors + 6%.
- `hnsw`: graph index (`IndexHNSWFlat`, M=32, efSearch 128 by default): single queries in milliseconds, good
  recall on clustered (real) embeddings, poor on unstructured high-dimensional vectors; builds slowly.
- `ivf`: inverted lists with product quantisation and exact re-ranking (`IVFk,PQm` + `IndexRefineFlat`): the
  fastest at large scale when the vectors cluster; needs a training sample (>= 39 x lists vectors).
- `auto`: `flat` below `AUTO_CROSSOVER` vectors, else `pq`. The crossover comes from the memory traffic of exact
  search: one query reads N x dim x 4 bytes (200,000 x 512: 400 MB, ~20 ms at the ~20 GB/s two cores stream),
  which is where single-query latency stops being interactive; `bench/bench_search.py` measures all kinds on the
  machine at hand (`--n`), and `library index LIB --index ...` switches any time.

The FAISS file is written atomically; its own binary format is read back (no pickle). Ids are the library's study
row ids (`IndexIDMap2`), so a result is a row of `library.sqlite` directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np
import torch

from ..errors import ConfigError
from .store import LibraryError

INDEX_KINDS = ("auto", "flat", "pq", "hnsw", "ivf")
AUTO_CROSSOVER = 200_000
PQ_K_FACTOR = 100  # re-ranked candidates per requested result (recall 0.99-1.00 at 1,000,000 random vectors)
TRAIN_SAMPLE = 100_000  # quantisers train on at most this many vectors (a random sample)
EXACT_BLOCK_BYTES = 256 * 2**20  # score-matrix block of the exact search
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
        return "flat" if n < AUTO_CROSSOVER else "pq"
    return kind


def min_vectors(kind: str) -> int:
    """Vectors a kind needs to train its quantiser (flat and hnsw need none)."""
    return {"ivf": 39, "pq": 16}.get(kind, 0)


def make_index(kind: str, dim: int, n: int, *, nlist: int | None = None, pq_m: int | None = None):
    """An empty (untrained for ivf) FAISS index of `kind` for `n` vectors of `dim`, inner-product metric."""
    kind = resolve_kind(kind, n)
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "pq":
        if dim % 2:
            raise ConfigError(f"a pq index needs an even dimension, got {dim} (use --index flat)")
        refine = faiss.IndexRefineFlat(faiss.IndexPQFastScan(dim, dim // 2, 4, faiss.METRIC_INNER_PRODUCT))
        refine.k_factor = PQ_K_FACTOR
        return faiss.IndexIDMap2(refine)
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
    kind = resolve_kind(kind, n)
    index = make_index(kind, dim, n, **opts)
    if not index.is_trained:
        if n < min_vectors(kind):
            raise LibraryError(f"a {kind} index needs at least {min_vectors(kind)} vectors to train, got {n} "
                               "(use --index flat)")
        sample, size = vectors, max(TRAIN_SAMPLE, 40 * _ivf_lists(index))  # k-means wants >= 39 points a centroid
        if n > size:
            sample = vectors[np.sort(np.random.default_rng(0).choice(n, size, replace=False))]
        index.train(sample)
    if n:
        index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
    return index


def _ivf_lists(index) -> int:
    base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(base, faiss.IndexRefineFlat):
        base = faiss.downcast_index(base.base_index)
    return int(base.nlist) if isinstance(base, faiss.IndexIVF) else 0


def set_search_params(index, *, ef_search: int | None = None, nprobe: int | None = None,
                      k_factor: float | None = None) -> None:
    """Search-time accuracy knobs: `ef_search` (hnsw), `nprobe` (ivf), `k_factor` (re-ranked candidates per result,
    pq and ivf); a knob the index does not have is ignored."""
    base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(base, faiss.IndexHNSWFlat) and ef_search:
        base.hnsw.efSearch = int(ef_search)
    if isinstance(base, faiss.IndexRefineFlat):
        if k_factor:
            base.k_factor = float(k_factor)
        inner = faiss.downcast_index(base.base_index)
        if nprobe and isinstance(inner, faiss.IndexIVF):
            inner.nprobe = int(nprobe)


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores (Q, k), ids (Q, k)); ids -1 where fewer than k vectors exist."""
    q = normalize(np.atleast_2d(queries))
    k = max(1, min(int(k), max(index.ntotal, 1)))
    flat = _flat_parts(index)
    if flat is not None and index.ntotal:
        return exact_search(*flat, q, k)
    return index.search(q, k)


def _flat_parts(index) -> tuple[np.ndarray, np.ndarray] | None:
    """(vectors (N, dim), ids (N,)) as zero-copy views of an `IndexIDMap2(IndexFlatIP)`, else None."""
    if not isinstance(index, faiss.IndexIDMap2):
        return None
    base = faiss.downcast_index(index.index)
    if not isinstance(base, faiss.IndexFlatIP):
        return None
    n, dim = int(base.ntotal), int(base.d)
    vectors = faiss.rev_swig_ptr(base.get_xb(), n * dim).reshape(n, dim)
    return vectors, faiss.rev_swig_ptr(index.id_map.data(), n)


@torch.inference_mode()
def exact_search(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k of `queries` (Q, dim) over `vectors` (N, dim): one matrix product per block of
    rows, the running top-k merged across blocks. Scores (Q, k) float32 descending, ids mapped through `ids`."""
    x = torch.from_numpy(vectors)
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    k = min(k, len(vectors))
    block = max(k, EXACT_BLOCK_BYTES // (4 * max(len(q), 1)))
    best_s = best_i = None
    for start in range(0, len(x), block):
        scores = q @ x[start : start + block].T
        s, i = scores.topk(min(k, scores.shape[1]), dim=1)
        i = i + start
        if best_s is not None:
            s, order = torch.cat([best_s, s], 1).topk(k, dim=1)
            i = torch.cat([best_i, i], 1).gather(1, order)
        best_s, best_i = s, i
    return best_s.numpy(), ids[best_i.numpy()]


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
