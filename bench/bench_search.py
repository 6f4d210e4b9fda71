"""Library search speed: exact and approximate FAISS search against a NumPy brute force in the same run, index
build throughput, and a bounded load test of `radfinder serve` on 127.0.0.1.

1. Vectors: N L2-normalised float32 vectors of `--dim` (default the issue's 1,000,000 x 512: 2 GB). `--data random`
   draws them i.i.d. Gaussian (the hardest case for any approximate index: no structure, and the 10th and 11th
   neighbours are nearly tied); `--data clustered` draws them around 1,000 random centres, closer to real
   embeddings, which are far from uniform.
2. Exact: the library's `flat` index (FAISS storage, torch matrix-product search) in batches of `--batch` queries
   and one query at a time, and FAISS's own `IndexFlatIP.search` on the same index, against NumPy `q @ X.T` +
   `argpartition` on the same queries (the reference).
3. Approximate (`--ann`, default pq,ivf; add hnsw, whose build takes minutes at 1,000,000): the library's `pq`
   (4-bit PQ fast scan + exact re-ranking) and `ivf` (IVF-PQ + re-ranking) and an HNSW graph (M=32), single-query
   p50 / p95 latency and recall@10 against the exact result at a few search settings; build throughput of each.
4. Server: a library of `--studies` (default 10,000) synthetic studies (random embeddings and depth cells, a tiny
   random checkpoint: the cost of a real checkpoint's text tower is not measured here), `radfinder serve` started
   as a subprocess on 127.0.0.1 only, `--clients` (default 50) concurrent clients sending distinct queries to
   GET /api/search (k=10) until `--requests` answers or `--seconds` pass. Reported: p50 / p95 latency, errors,
   throughput, and the in-process `Library.search` latency as the reference.

Usage: nice -n 15 python bench/bench_search.py [--n 1000000] [--dim 512] [--data random|clustered] [--skip-ann]
       [--skip-server] ...   Prints numbers and ratios; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from radfinder.library.index import HNSW_M, PQ_K_FACTOR, build_index, set_search_params
from radfinder.library.index import search as index_search


def _pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1000.0, q))


def make_vectors(n: int, dim: int, kind: str, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), np.float32)
    centres = rng.normal(size=(1000, dim)).astype(np.float32) if kind == "clustered" else None
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        block = rng.normal(size=(e - s, dim)).astype(np.float32)
        if centres is not None:
            block = centres[rng.integers(0, len(centres), e - s)] + 0.35 * block
        x[s:e] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x


def numpy_topk(x: np.ndarray, q: np.ndarray, k: int, chunk: int = 200_000) -> np.ndarray:
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.zeros((len(q), k), np.int64)
    for s in range(0, len(x), chunk):
        sc = q @ x[s : s + chunk].T
        part = np.argpartition(-sc, k - 1, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(sc, part, 1)], axis=1)
        cand_i = np.concatenate([best_i, part + s], axis=1)
        order = np.argsort(-cand_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact, strict=True)]))


def single_latencies(search, q: np.ndarray) -> tuple[list[float], np.ndarray]:
    out, ids = [], []
    for row in q:
        t = time.perf_counter()
        _, i = search(row[None])
        out.append(time.perf_counter() - t)
        ids.append(i[0])
    return out, np.array(ids)


def _timed_batches(fn, q: np.ndarray, batch: int) -> float:
    t = time.perf_counter()
    for s in range(0, len(q), batch):
        fn(q[s : s + batch])
    return len(q) / (time.perf_counter() - t)


def bench_vectors(args) -> dict:
    res: dict = {"n": args.n, "dim": args.dim, "data": args.data, "threads": faiss.omp_get_max_threads()}
    t = time.perf_counter()
    x = make_vectors(args.n, args.dim, args.data)
    q = make_vectors(args.queries, args.dim, args.data, seed=1)
    if args.data == "clustered":  # queries near the data, as real queries are
        q = make_vectors(args.n, args.dim, args.data)[: args.queries] + 0.05 * q
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    print(f"vectors: {args.n} x {args.dim} ({x.nbytes / 2**30:.2f} GiB, {args.data}) in "
          f"{time.perf_counter() - t:.1f} s", flush=True)  # fmt: skip
    ids = np.arange(args.n, dtype=np.int64)

    t = time.perf_counter()
    truth = numpy_topk(x, q, args.k)
    res["numpy_batch_qps"] = args.queries / (time.perf_counter() - t)
    print(f"reference, NumPy brute force (q @ X.T + argpartition), batch: {res['numpy_batch_qps']:.1f} queries/s",
          flush=True)  # fmt: skip

    # the library's exact index: FAISS storage, torch matrix-product search (radfinder.library.index)
    t = time.perf_counter()
    flat = build_index(x, ids, "flat")
    res["flat_build_vectors_per_s"] = args.n / (time.perf_counter() - t)
    res["flat_batch_qps"] = _timed_batches(lambda b: index_search(flat, b, args.k), q, args.batch)
    lat, got = single_latencies(lambda r: index_search(flat, r, args.k), q[: args.single])
    res["flat_single_p50_ms"], res["flat_single_p95_ms"] = _pct(lat, 50), _pct(lat, 95)
    _, got_b = index_search(flat, q, args.k)
    res["flat_batch_recall_at_10"] = recall(got_b, truth)
    # FAISS's own flat search on the same index, for the record
    res["faiss_flat_batch_qps"] = _timed_batches(lambda b: flat.search(b, args.k), q, args.batch)
    print(f"library exact (flat) batch {args.batch}: {res['flat_batch_qps']:.1f} queries/s "
          f"({res['flat_batch_qps'] / res['numpy_batch_qps']:.2f}x NumPy; FAISS's own IndexFlatIP search "
          f"{res['faiss_flat_batch_qps']:.1f} queries/s, {res['faiss_flat_batch_qps'] / res['numpy_batch_qps']:.2f}x); "
          f"single p50 {res['flat_single_p50_ms']:.1f} ms, p95 {res['flat_single_p95_ms']:.1f} ms; "
          f"recall@10 vs NumPy {res['flat_batch_recall_at_10']:.3f}; "
          f"build {res['flat_build_vectors_per_s']:.0f} vectors/s", flush=True)  # fmt: skip
    flat = None  # frees its 2 GB before the approximate indexes are built

    for kind in [] if args.skip_ann else args.ann.split(","):
        t = time.perf_counter()
        if kind == "hnsw":  # built here for its efConstruction flag; the library's uses HNSW_M too
            index = faiss.IndexHNSWFlat(args.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = args.ef_construction
            index.add(x)
            settings = [("efSearch", v) for v in (64, 128, 256, 512)]
        elif kind == "pq":
            index = build_index(x, ids, "pq")
            settings = [("k_factor", v) for v in (25, 50, PQ_K_FACTOR, 200)]
        elif kind == "ivf":
            index = build_index(x, ids, "ivf", nlist=args.nlist or None)
            settings = [("nprobe", v) for v in (16, 64, 256)]
        else:
            raise SystemExit(f"unknown --ann kind {kind!r} (pq, hnsw, ivf)")
        build_s = time.perf_counter() - t
        res[f"{kind}_build_vectors_per_s"] = args.n / build_s
        print(f"{kind}: built in {build_s:.1f} s ({args.n / build_s:.0f} vectors/s)", flush=True)
        for name, value in settings:
            if kind == "hnsw":
                index.hnsw.efSearch = value
            else:
                set_search_params(index, nprobe=value if name == "nprobe" else None,
                                  k_factor=value if name == "k_factor" else None)
            lat, got = single_latencies(lambda r, ix=index: ix.search(r, args.k), q[: args.single])
            r = recall(got, truth[: args.single])
            key = f"{kind}_{name}{value}"
            res[key] = {"p50_ms": _pct(lat, 50), "p95_ms": _pct(lat, 95), "recall_at_10": r}
            print(f"  {name}={value}: single p50 {_pct(lat, 50):.2f} ms, p95 {_pct(lat, 95):.2f} ms "
                  f"({res['flat_single_p50_ms'] / max(_pct(lat, 50), 1e-9):.1f}x faster than exact), "
                  f"recall@10 {r:.3f}", flush=True)  # fmt: skip
        del index
    return res


def make_server_library(root: Path, n: int, seed: int = 0) -> Path:
    """A library of n synthetic studies (random unit embeddings, 24 depth cells each) for a tiny checkpoint."""
    import torch

    from radfinder.library.build import checkpoint_hash, rebuild_index
    from radfinder.library.slices import SliceLayout, png_gray
    from radfinder.library.store import SCHEMA_VERSION, LibraryStore, StudyRow
    from radfinder.models import RadFinderModel
    from radfinder.text.findings import CTRATE_FINDINGS

    torch.manual_seed(seed)
    model = RadFinderModel("tiny")
    ckpt = root / "ckpt"
    model.save_pretrained(ckpt)
    dim = int(model.config.projection_dim)
    store = LibraryStore(root / "lib", create=True)
    store.set_meta({"schema_version": SCHEMA_VERSION, "checkpoint": str(ckpt), "checkpoint_hash": checkpoint_hash(ckpt),
                    "spec_hash": model.preprocess_spec.hash(), "dim": dim, "findings": list(CTRATE_FINDINGS),
                    "index_kind": "auto", "localization_tau": float(model.config.localization_tau)})  # fmt: skip
    rng = np.random.default_rng(seed)
    affine = np.diag([0.75, 0.75, 3.0, 1.0])
    layout = SliceLayout.of((512, 512, 100), affine)
    thumb = png_gray(np.zeros((96, 96), np.uint8))

    def unit(*shape):
        v = rng.normal(size=shape).astype(np.float32)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    for i in range(n):
        z = [float(v) for v in np.arange(24) * 12.0 + 6.0]
        store.add(StudyRow(
            key=f"s{i:06d}", report_id=f"s{i:06d}", patient=f"p{i}", dataset="synthetic", split="bench",
            path=str(root / "missing.nii.gz"), series=None, load_opts={}, findings_text="", impressions_text="",
            labels=[-1.0] * 18, spacing=[0.75, 0.75, 3.0], source_shape=[512, 512, 100],
            source_affine=affine.tolist(), slice_axis=2, depth_z_mm=z, depth_valid=[True] * 24,
            depth_slices=[layout.nearest_slice(v) for v in z],
            probabilities={f: float(p) for f, p in zip(CTRATE_FINDINGS, rng.random(18), strict=True)}, refs=[],
            retrieval=unit(dim), disease=unit(dim), report_emb=unit(dim), depth=unit(24, dim), thumbnail=thumb,
        ))  # fmt: skip
    store.close()
    rebuild_index(root / "lib")
    return root / "lib"


QUERY_PARTS = (
    ["small", "large", "subtle", "new", "stable", "calcified", "solid", "ground-glass", "patchy", "mild"],
    ["nodule", "consolidation", "effusion", "opacity", "atelectasis", "emphysema", "bronchiectasis", "thickening"],
    ["in the right upper lobe", "in the right lower lobe", "in the left upper lobe", "in the left lower lobe",
     "at the lung bases", "in the middle lobe", "in the lingula", "bilaterally"],
)  # fmt: skip


def queries(n: int) -> list[str]:
    a, b, c = QUERY_PARTS
    return [f"{a[i % len(a)]} {b[(i // len(a)) % len(b)]} {c[(i // (len(a) * len(b))) % len(c)]}, {i} mm"
            for i in range(n)]  # fmt: skip


async def _load(url: str, texts: list[str], clients: int, seconds: float) -> tuple[list[float], int, float]:
    import httpx

    lat: list[float] = []
    errors = 0
    kinds: dict[str, int] = {}
    it = iter(texts)
    stop = time.perf_counter() + seconds

    async def worker(client):
        nonlocal errors
        for text in it:
            if time.perf_counter() > stop:
                return
            t = time.perf_counter()
            try:
                r = await client.get(url, params={"q": text, "k": 10})
                ok = r.status_code == 200 and len(r.json()["results"]) == 10
                kind = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                ok, kind = False, type(exc).__name__
            lat.append(time.perf_counter() - t)
            if not ok:
                errors += 1
                kinds[kind] = kinds.get(kind, 0) + 1

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60.0, limits=limits, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    if kinds:
        print(f"errors by kind: {kinds}", flush=True)
    return lat, errors, time.perf_counter() - t0


def bench_server(args) -> dict:
    import httpx

    from radfinder.library import Library

    res: dict = {"studies": args.studies, "clients": args.clients}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        t = time.perf_counter()
        lib_dir = make_server_library(Path(tmp), args.studies)
        print(f"server library: {args.studies} synthetic studies in {time.perf_counter() - t:.1f} s", flush=True)
        texts = queries(args.requests + 200)
        lib = Library(lib_dir, device="cpu")
        lat_ref = []
        for text in texts[-100:]:
            t = time.perf_counter()
            lib.search(text, k=10)
            lat_ref.append(time.perf_counter() - t)
        lib.close()
        res["in_process_p50_ms"] = _pct(lat_ref, 50)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "radfinder", "serve", str(lib_dir), "--host", "127.0.0.1",
                                 "--port", str(port), "--device", "cpu"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 120
            while True:
                try:
                    if httpx.get(base + "/api/info", timeout=2, trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("server did not start")
                time.sleep(0.3)
            lat, errors, wall = asyncio.run(_load(base + "/api/search", texts[: args.requests], args.clients,
                                                  args.seconds))  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    res.update(requests=len(lat), errors=errors, p50_ms=_pct(lat, 50), p95_ms=_pct(lat, 95),
               requests_per_s=len(lat) / wall)  # fmt: skip
    print(f"server load test (127.0.0.1, {args.clients} concurrent clients, {len(lat)} requests in {wall:.1f} s): "
          f"p50 {res['p50_ms']:.0f} ms, p95 {res['p95_ms']:.0f} ms, {res['requests_per_s']:.1f} requests/s, "
          f"{errors} errors; in-process Library.search p50 {res['in_process_p50_ms']:.1f} ms", flush=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="vectors (default 1,000,000)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--data", choices=("random", "clustered"), default="random")
    p.add_argument("--queries", type=int, default=300, help="queries for the batch measurements")
    p.add_argument("--single", type=int, default=100, help="queries for single-query latency and recall")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--ann", default="pq,ivf", help="approximate indexes to measure (pq, ivf, hnsw)")
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--nlist", type=int, default=0)
    p.add_argument("--skip-ann", action="store_true")
    p.add_argument("--skip-vectors", action="store_true")
    p.add_argument("--skip-server", action="store_true")
    p.add_argument("--studies", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=2000, help="load test: stop after this many requests")
    p.add_argument("--seconds", type=float, default=120.0, help="load test: stop after this long")
    p.add_argument("--threads", type=int, default=2, help="FAISS/torch threads (default 2: the issue's 2 cores)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    import torch

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, {args.threads} threads; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          "(numbers from a shared machine are only comparable within this run)", flush=True)
    out = {"threads": args.threads, "loadavg": load}
    if not args.skip_vectors:
        out["vectors"] = bench_vectors(args)
    if not args.skip_server:
        out["server"] = bench_server(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
