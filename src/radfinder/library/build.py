"""`build_library` / `add_to_library`: embed every volume of a dataset into a library folder.

Per volume: the volume embedding (`projection_image`), the disease embedding and the 18 zero-shot finding
probabilities (mean7 prompts; calibrated when the checkpoint has a `calibration.json`, see `api.classify`),
one embedding per 12 mm depth cell with its world z and viewer slice, the report's embedding (`projection_text`)
when it has one, its mined slice references placed on slices, and a thumbnail.

Resumable: each study is committed as soon as it is embedded; a rerun skips every key already stored. Shardable
like feature extraction: under `torchrun` (or with an explicit `shard=(i, n)`) each process embeds its own
deterministic share (`radfinder.features.extract.select_shard`) into the same SQLite file; whichever process sees
the library complete rebuilds the FAISS indexes (the others say so and leave it).
"""

from __future__ import annotations

import hashlib
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..api import classify, encode_text, encode_volume, load_model, prompt_embeddings
from ..api.classify import finding_calibration
from ..data.records import StudyRecord
from ..data.registry import dataset_kind, load_dataset
from ..errors import CheckpointError
from ..features.extract import ExtractItem, select_shard, shard_from_env
from ..progress import progress
from ..text.findings import CTRATE_FINDINGS
from ..text.references import mine_references
from .index import build_index, min_vectors, normalize, resolve_kind, save_index
from .slices import SliceLayout, reference_slices, thumbnail
from .store import SCHEMA_VERSION, LibraryError, LibraryStore, StudyRow

INDEX_FILES = {"image": "index_image.faiss", "report": "index_report.faiss"}
_COLUMNS = {"image": "retrieval", "report": "report_emb"}


def checkpoint_hash(checkpoint: str | Path) -> str:
    """Content hash of a checkpoint directory: every file's relative path and bytes, 16 hex digits."""
    root = Path(checkpoint)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a checkpoint directory")
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:16]


def load_records(data: str | Path, kind: str = "ctrate", split: str | None = "all", limit: int | None = None,
                 **opts: Any) -> list[StudyRecord]:
    """Records of `data` in the `radfinder evaluate` convention; split "all" (or None) = every split of the kind."""
    spec = dataset_kind(kind)
    if spec.name == "ctrate":
        opts.setdefault("mode", "first_all")
    if split in (None, "", "all"):
        records = []
        for s in spec.splits:
            records += load_dataset(spec.name, data, s if s is not None else ("all" if spec.name == "manifest" else s),
                                    **opts)
    else:
        records = load_dataset(spec.name, data, split, **opts)
    seen: set[str] = set()
    records = [r for r in records if not (r.key in seen or seen.add(r.key))]
    return records[:limit] if limit else records


def _row(model, prompts, record: StudyRecord, chunk_size: int) -> StudyRow:
    vol = record.load_volume()
    enc = encode_volume(model, vol, chunk_size=chunk_size)
    scores = classify(model, enc, prompts=prompts)
    layout = SliceLayout.of(vol.array.shape, vol.affine)
    report_emb = encode_text(model, record.report_text)[0] if record.has_report else None
    series = vol.meta.get("series") or {}
    refs = []
    for name, text in (("findings", record.findings), ("impressions", record.impressions)):
        refs += [{**r.to_dict(), "field": name} for r in mine_references(text)]
    refs = reference_slices(refs, layout, vol.meta.get("instances"), series.get("number"))
    return StudyRow(
        key=record.key, report_id=record.report_id, patient=record.patient, dataset=record.dataset,
        split=record.split, path=str(Path(record.path).resolve()), series=record.series,
        load_opts=dict(record.load_opts), findings_text=record.findings, impressions_text=record.impressions,
        labels=[float(v) for v in record.labels], spacing=[float(v) for v in vol.spacing],
        source_shape=[int(v) for v in vol.array.shape], source_affine=np.asarray(vol.affine, float).tolist(),
        slice_axis=layout.axis, depth_z_mm=[float(v) for v in enc.depth_z_mm],
        depth_valid=[bool(v) for v in enc.depth_valid],
        depth_slices=[layout.nearest_slice(z) for z in enc.depth_z_mm],
        probabilities={s.finding: s.probability for s in scores}, refs=refs,
        retrieval=normalize(enc.retrieval), disease=normalize(enc.disease),
        report_emb=None if report_emb is None else normalize(report_emb), depth=normalize(enc.depth),
        thumbnail=thumbnail(vol.array, layout),
    )  # fmt: skip


def rebuild_index(library: str | Path, kind: str | None = None) -> dict[str, Any]:
    """(Re)build the FAISS indexes of a library from its SQLite rows; `kind` None keeps the stored choice."""
    root = Path(library)
    store = LibraryStore(root)
    try:
        meta = store.get_meta()
        kind = kind or meta.get("index_kind", "auto")
        out = {}
        for over, fname in INDEX_FILES.items():
            ids, vecs = store.vectors(_COLUMNS[over], int(meta["dim"]))
            resolved = resolve_kind(kind, len(ids))
            resolved = resolved if len(ids) >= min_vectors(resolved) else "flat"  # too few to train a quantiser
            save_index(build_index(vecs, ids, resolved), root / fname)
            out[over] = {"vectors": int(len(ids)), "kind": resolved}
        store.set_meta({"index_kind": kind, "indexes": out})
        return out
    finally:
        store.close()


def _open_for_writing(out: Path, ckpt: Path, ckpt_hash: str, model, index_kind: str,
                      hub: dict[str, str] | None = None) -> LibraryStore:
    if out.exists() and not (out / "library.sqlite").exists() and any(out.iterdir()):
        raise LibraryError(f"{out}: folder exists and is not a library (choose an empty or new folder)")
    store = LibraryStore(out, create=True)
    meta = store.get_meta()
    if meta:
        if meta.get("checkpoint_hash") != ckpt_hash:
            store.close()
            raise LibraryError(f"{out}: built with checkpoint {meta.get('checkpoint')} (hash "
                               f"{meta.get('checkpoint_hash')}), not {ckpt} (hash {ckpt_hash})")  # fmt: skip
        return store
    store.set_meta({
        "schema_version": SCHEMA_VERSION, "checkpoint": str(ckpt), "checkpoint_hash": ckpt_hash,
        "hub": hub,  # repo id, revision and commit when the checkpoint is a released model (else null)
        "spec_hash": model.preprocess_spec.hash(), "dim": int(model.config.projection_dim),
        "findings": list(CTRATE_FINDINGS), "index_kind": index_kind,
        "localization_tau": float(model.config.localization_tau),
        "cell_mm": float(model.preprocess_spec.depth_cell_mm),
        # whether the stored finding probabilities are calibrated (the checkpoint's calibration.json) or raw
        "calibrated": finding_calibration(model, CTRATE_FINDINGS) is not None,
    })  # fmt: skip
    return store


def build_library(
    checkpoint: str | Path,
    data: str | Path | Sequence[StudyRecord],
    out: str | Path,
    *,
    kind: str = "ctrate",
    split: str | None = "all",
    limit: int | None = None,
    index: str = "auto",
    shard: tuple[int, int] | None = None,
    device: str = "auto",
    chunk_size: int = 8,
    model=None,
    prompts=None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Embed every volume of `data` (a dataset root read with `kind`/`split`, or `StudyRecord`s) into the library
    folder `out` (created, or resumed when it holds a library of the same checkpoint). Returns a summary.

    The checkpoint's absolute path and content hash are stored; `search`/`serve` refuse a changed checkpoint.
    `model`: an already loaded model of `checkpoint` (saves loading it twice); `prompts`: its
    `prompt_embeddings` (saves embedding the 18 x 14 prompt sentences again)."""
    from ..models.hub import resolve_weights

    t0 = time.perf_counter()
    resolved = resolve_weights(checkpoint, "checkpoint")  # a hub id becomes its verified snapshot folder
    ckpt = resolved.path.resolve()
    ckpt_hash = checkpoint_hash(ckpt)
    records = list(data) if not isinstance(data, str | Path) else load_records(data, kind, split, limit)
    if not isinstance(data, str | Path) and limit:
        records = records[:limit]
    if not records:
        raise LibraryError(f"{data}: no volumes to add")
    model = model if model is not None else load_model(ckpt, device=device)
    out = Path(out)
    store = _open_for_writing(out, ckpt, ckpt_hash, model, index, resolved.record())
    try:
        stored = store.keys()
        for r in records:
            if r.key in stored and stored[r.key] != str(Path(r.path).resolve()):
                raise LibraryError(f"study key {r.key!r} is already in {out} with another volume ({stored[r.key]})")
        shard = shard or shard_from_env()
        by_key = {r.key: r for r in records}
        mine = [by_key[it.key] for it in select_shard([ExtractItem(r.key, r.path) for r in records], shard)]
        todo = [r for r in mine if r.key not in stored]
        summary: dict[str, Any] = {"library": str(out), "checkpoint": str(ckpt), "checkpoint_hash": ckpt_hash,
                                   "hub": resolved.record(),
                                   "shard": f"{shard[0]}/{shard[1]}", "requested": len(records),
                                   "skipped_existing": len(mine) - len(todo), "added": 0, "failed": {}}  # fmt: skip
        if todo:
            prompts = prompts if prompts is not None else prompt_embeddings(model)
            for r in progress(todo, total=len(todo), desc="library", enabled=show_progress):
                try:
                    store.add(_row(model, prompts, r, chunk_size))
                    summary["added"] += 1
                except (KeyboardInterrupt, LibraryError):
                    raise
                except Exception as exc:  # one bad volume must not stop an archive-sized build
                    msg = f"{type(exc).__name__}: {exc}"
                    store.record_failure(r.key, r.path, msg + "\n" + traceback.format_exc(limit=3))
                    summary["failed"][r.key] = msg
        missing = set(by_key) - set(store.keys())
        summary["studies"] = store.count()
    finally:
        store.close()
    if not missing or shard[1] == 1:
        summary["indexes"] = rebuild_index(out)
    else:
        summary["indexes"] = None
        summary["waiting_for"] = len(missing)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def add_to_library(
    library: str | Path,
    data: str | Path | Sequence[StudyRecord],
    *,
    kind: str = "ctrate",
    split: str | None = "all",
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    device: str = "auto",
    chunk_size: int = 8,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Add the volumes of `data` to an existing library with the checkpoint it was built with (hash checked)."""
    store = LibraryStore(library)
    meta = store.get_meta()
    store.close()
    if not meta.get("checkpoint"):
        raise LibraryError(f"{library}: library has no checkpoint recorded")
    return build_library(meta["checkpoint"], data, library, kind=kind, split=split, limit=limit,
                         index=meta.get("index_kind", "auto"), shard=shard, device=device, chunk_size=chunk_size,
                         show_progress=show_progress)  # fmt: skip
