"""`preprocess_dataset`: fill a cache folder for a whole dataset, in parallel, sharded, resumable.

* Each entry is written atomically (see `cache`), so an interrupted run leaves complete entries and at most some
  stale ``.*.tmp`` files, which the next run of the same shard deletes.
* Entries already present (same source identity and spec hash) are skipped, so a rerun resumes.
* A source that fails is recorded and the run goes on; the summary and ``failures*.json`` list every failure.
* A worker process that dies (killed, out of memory) breaks the pool; its unfinished sources are retried once in
  a fresh pool, then reported as failed.
* ``manifest*.json`` lists every entry of the shard (written now or found), with shapes and grids.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..progress import progress
from .cache import SUFFIX, atomic_write_bytes, entry_key, readable_stem, save_preprocessed, source_identity
from .sources import Source, shard_of
from .spec import PreprocessSpec

POOL_RESTARTS = 2


@dataclass
class DatasetReport:
    cache_dir: Path
    spec_hash: str
    shard: tuple[int, int] | None
    written: list[dict[str, Any]] = field(default_factory=list)
    cached: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    manifest_path: Path | None = None
    failures_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> dict[str, Any]:
        return {
            "cache_dir": str(self.cache_dir),
            "spec_hash": self.spec_hash,
            "shard": None if self.shard is None else f"{self.shard[0]}/{self.shard[1]}",
            "written": len(self.written),
            "cached": len(self.cached),
            "failed": len(self.failed),
            "seconds": round(self.seconds, 3),
            "manifest": str(self.manifest_path) if self.manifest_path else None,
            "failures_file": str(self.failures_path) if self.failures_path else None,
            "failures": [{"source": f["source"], "error": f["error"]} for f in self.failed],
        }


def _task_entry(src: Source, spec_dir: Path, spec: PreprocessSpec, content_hash: bool, series: str | None):
    ident = source_identity(src.path, content_hash=content_hash, series=series)
    return ident, spec_dir / f"{readable_stem(src.path)}-{entry_key(ident, spec)}{SUFFIX}"


def process_one(source: str, name: str, entry: str, spec_json: str, series: str | None, ident: dict) -> dict:
    """Worker: read, preprocess, write one entry. Never raises for a bad input; returns a record instead."""
    from .apply import apply_spec
    from .sources import load_source

    t0 = time.perf_counter()
    rec: dict[str, Any] = {"source": source, "name": name, "file": Path(entry).name}
    try:
        spec = PreprocessSpec.model_validate_json(spec_json)
        vol = load_source(source, series)
        pre = apply_spec(vol, spec)
        save_preprocessed(entry, pre, {"source_identity": ident, "source": source, "name": name})
        rec.update(
            status="written",
            shape=list(pre.image.shape),
            grid=list(pre.grid),
            source_shape=list(vol.shape),
            source_spacing=[round(s, 4) for s in vol.spacing],
            bytes=os.path.getsize(entry),
        )
    except Exception as exc:  # one bad volume must not stop the dataset
        rec.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=4))
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def _clean_stale_tmp(entries: list[Path]) -> int:
    n = 0
    for e in entries:
        for tmp in e.parent.glob(f".{e.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            n += 1
    return n


def _run_pool(tasks: list[tuple], workers: int, show: bool, total: int) -> list[dict]:
    import multiprocessing as mp

    results: list[dict] = []
    pending = list(tasks)
    bar = progress(iter(range(total)), total=total, desc="preprocess", enabled=show)
    for attempt in range(POOL_RESTARTS + 1):
        if not pending:
            break
        # spawn, not fork: the parent may hold threads (torch, tqdm) that fork would copy in a locked state.
        ctx = mp.get_context("spawn")
        broken: list[tuple] = []
        with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=ctx) as pool:
            futures = {pool.submit(process_one, *t): t for t in pending}
            for fut in as_completed(futures):
                try:
                    results.append(fut.result())
                    next(bar, None)
                except BrokenProcessPool:
                    broken.append(futures[fut])
        pending = broken
        if pending and attempt == POOL_RESTARTS:
            for t in pending:
                results.append(
                    {
                        "source": t[0],
                        "name": t[1],
                        "file": Path(t[2]).name,
                        "status": "failed",
                        "error": "worker process died (killed or crashed) while preprocessing this volume",
                        "seconds": 0.0,
                    }
                )
                next(bar, None)
    for _ in bar:  # close the bar
        pass
    return results


def preprocess_dataset(
    sources: list[Source],
    cache_dir: str | Path,
    spec: PreprocessSpec,
    *,
    workers: int = 1,
    shard: tuple[int, int] | None = None,
    content_hash: bool = False,
    series: str | None = None,
    show_progress: bool = True,
) -> DatasetReport:
    """Preprocess every source of this shard into <cache_dir>/<spec hash>/ and write the manifest and failures."""
    t0 = time.perf_counter()
    cache_dir = Path(cache_dir)
    spec_dir = cache_dir / spec.hash()
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec_file = spec_dir / "spec.json"
    if not spec_file.is_file():
        atomic_write_bytes(
            spec_file, (json.dumps(spec.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()
        )
    report = DatasetReport(cache_dir=cache_dir, spec_hash=spec.hash(), shard=shard)
    mine = shard_of(sources, shard)
    tasks, entries = [], []
    for src in mine:
        try:
            ident, entry = _task_entry(src, spec_dir, spec, content_hash, series)
        except Exception as exc:
            report.failed.append(
                {"source": str(src.path), "name": src.name, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            )
            continue
        entries.append(entry)
        if entry.is_file():
            report.cached.append({"source": str(src.path), "name": src.name, "file": entry.name, "status": "cached"})
        else:
            tasks.append((str(src.path), src.name, str(entry), spec.canonical_json(), series, ident))
    _clean_stale_tmp(entries)
    if tasks:
        if workers <= 1:
            it = progress(tasks, total=len(tasks), desc="preprocess", enabled=show_progress)
            results = [process_one(*t) for t in it]
        else:
            results = _run_pool(tasks, workers, show_progress, len(tasks))
        for rec in results:
            (report.written if rec["status"] == "written" else report.failed).append(rec)
    report.seconds = time.perf_counter() - t0
    _write_outputs(report, spec_dir, spec)
    return report


def _write_outputs(report: DatasetReport, spec_dir: Path, spec: PreprocessSpec) -> None:
    suffix = "" if report.shard is None else f".shard-{report.shard[0]}-of-{report.shard[1]}"
    report.manifest_path = spec_dir / f"manifest{suffix}.json"
    failures_path = spec_dir / f"failures{suffix}.json"
    report.failures_path = failures_path if report.failed else None
    entries = sorted(report.written + report.cached, key=lambda r: r["name"])
    manifest = {
        "spec_hash": report.spec_hash,
        "spec": spec.model_dump(mode="json"),
        "summary": report.summary(),
        "entries": entries,
    }
    atomic_write_bytes(report.manifest_path, (json.dumps(manifest, indent=1) + "\n").encode())
    if report.failed:
        failures = sorted(report.failed, key=lambda r: r["name"])
        atomic_write_bytes(failures_path, (json.dumps(failures, indent=1) + "\n").encode())
    else:
        failures_path.unlink(missing_ok=True)
