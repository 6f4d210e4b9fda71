"""`Library`: search a built library by text or by scan, and the per-study views the web page shows.

Text search (`over="image"`, the default) reads the scans' embeddings only, never a stored report or label. A query
that names one of the vocabulary's findings ("Cardiomegaly.", "Pleural effusion is present.", "No emphysema.":
`library.query.match_finding`) is ranked by that finding's zero-shot score, the same positive-against-negative
prompt scoring the zero-shot evaluation uses, on each study's disease embedding; the score shown is the finding's
probability (calibrated on the training split when the checkpoint has a calibration, `ranking: "finding"`). Any
other text compares the query's `projection_text` embedding with every volume embedding (`ranking:
"similarity"`). `over="report"` compares any query with the stored reports' embeddings instead (same text tower;
useful where reports exist, and a reference for the image search).
`search_like` compares a scan's volume embedding with the library's. A similarity score is the cosine.

For a text query each result also gets the best depth cell for the sentence: its snippet embedding
(`projection_text_copy`) against the study's depth-cell embeddings, as `radfinder.api.localize` does.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..api import calibrated_logits, depth_probabilities, encode_query, encode_volume, load_model, prompt_embeddings
from ..errors import CheckpointError, ConfigError
from ..models.calibration import sigmoid
from .batching import Coalescer
from .build import INDEX_FILES, checkpoint_hash
from .index import load_index, normalize
from .index import search as index_search
from .query import FindingQuery, match_finding
from .store import LibraryError, LibraryStore, StudyRow

OVER = ("image", "report")
MAX_K = 100
_FILTER = re.compile(r"^\s*(?P<name>.+?)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[0-9]*\.?[0-9]+)\s*$")
_OPS = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).lower()


def parse_filters(
    filters: list[str] | tuple[str, ...] | str | None, findings: list[str]
) -> list[tuple[str, str, float]]:
    """"Lung nodule>0.5" -> [("Lung nodule", ">", 0.5)]; names matched case- and underscore-insensitively."""
    if not filters:
        return []
    known = {_norm(f): f for f in findings}
    out = []
    for text in [filters] if isinstance(filters, str) else filters:
        m = _FILTER.match(text)
        if not m:
            raise ConfigError(f"filter {text!r} must look like FINDING>0.5 (operators > >= < <=)")
        name = known.get(_norm(m["name"]))
        if name is None:
            raise ConfigError(f"filter {text!r}: unknown finding {m['name']!r}; known: {', '.join(findings)}")
        value = float(m["value"])
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"filter {text!r}: the threshold is a probability between 0 and 1")
        out.append((name, m["op"], value))
    return out


def search_answer(res: dict[str, Any]) -> dict[str, Any]:
    """What `radfinder search --json` prints and the server's /api/search answers: the results and how they were
    ranked (`ranking`, `finding`, `present`, `calibrated`; a scan search has only the results)."""
    keys = ("ranking", "finding", "present", "calibrated")
    return {"results": res["results"], **{k: res[k] for k in keys if k in res}}


def check_k(k: int) -> int:
    if not 1 <= int(k) <= MAX_K:
        raise ConfigError(f"k must be between 1 and {MAX_K}, got {k}")
    return int(k)


class Library:
    """An opened library folder. The model is loaded on first need from the stored checkpoint path, after its
    content hash is checked against the one recorded at build time (a changed checkpoint is refused)."""

    def __init__(self, root: str | Path, *, device: str = "auto", model=None, text_cache: int = 256):
        self.root = Path(root)
        self.store = LibraryStore(self.root)
        self.meta = self.store.get_meta()
        if "dim" not in self.meta:
            raise LibraryError(f"{self.root}: library has no metadata (interrupted before its first study?)")
        self.dim = int(self.meta["dim"])
        self.findings: list[str] = list(self.meta["findings"])
        self.device = device
        self._model = model
        self._indexes: dict[str, Any] = {}
        self._probs = dict(self.store.probabilities())
        self._lock = threading.Lock()
        self._text_cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._text_cache_size = text_cache
        # concurrent text queries (the server's worker threads) share one text-tower pass
        self._queries: Coalescer[str, tuple[np.ndarray, np.ndarray]] = Coalescer(self._encode_queries, max_batch=64)
        self._finding_logits: tuple[np.ndarray, np.ndarray, bool] | None = None
        self._finding_margins = np.zeros((0, len(self.findings)))

    def close(self) -> None:
        self.store.close()

    # -- model and indexes
    def verify_checkpoint(self) -> str:
        path = Path(self.meta["checkpoint"])
        if not path.is_dir():
            raise CheckpointError(f"the library's checkpoint {path} is missing (the library needs the exact "
                                  "checkpoint it was built with)")  # fmt: skip
        got = checkpoint_hash(path)
        if got != self.meta["checkpoint_hash"]:
            raise CheckpointError(f"the checkpoint at {path} changed since the library was built (hash {got}, "
                                  f"library built with {self.meta['checkpoint_hash']}); rebuild the library")
        return got

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                self.verify_checkpoint()
                self._model = load_model(self.meta["checkpoint"], device=self.device)
            return self._model

    def index(self, over: str):
        if over not in OVER:
            raise ConfigError(f"over must be one of {', '.join(OVER)}, got {over!r}")
        if over not in self._indexes:
            self._indexes[over] = load_index(self.root / INDEX_FILES[over])
        return self._indexes[over]

    def info(self) -> dict[str, Any]:
        return {"library": str(self.root), "studies": self.store.count(), "checkpoint": self.meta["checkpoint"],
                "checkpoint_hash": self.meta["checkpoint_hash"], "hub": self.meta.get("hub"),
                "spec_hash": self.meta["spec_hash"], "dim": self.dim, "findings": self.findings,
                "indexes": self.meta.get("indexes"), "calibrated": self.meta.get("calibrated"),
                "failures": self.store.failures()}  # fmt: skip

    def text_embeddings(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(report-space embedding, snippet embedding) of a query, both L2-normalised (LRU-cached)."""
        text = " ".join(str(text).split())
        if not text:
            raise ConfigError("the query text is empty")
        with self._lock:
            hit = self._text_cache.get(text)
            if hit is not None:
                self._text_cache.move_to_end(text)
                return hit
        q, s = self._queries.submit(text)
        with self._lock:
            self._text_cache[text] = (q, s)
            while len(self._text_cache) > self._text_cache_size:
                self._text_cache.popitem(last=False)
        return q, s

    def _encode_queries(self, texts) -> list[tuple[np.ndarray, np.ndarray]]:
        model = self.model
        with self._lock:  # one model call at a time: requests queue instead of oversubscribing the CPU
            report, snippet = encode_query(model, list(texts), batch_size=64)
        return list(zip(normalize(report), normalize(snippet), strict=True))

    # -- search
    def _ranked(self, vector: np.ndarray, over: str, k: int, filters) -> list[tuple[int, float]]:
        index = self.index(over)
        total = int(index.ntotal)
        if total == 0:
            return []
        fetch = k if not filters else min(total, 4 * k)
        while True:
            scores, ids = index_search(index, vector, fetch)
            hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
            if filters:
                hits = [h for h in hits if self._passes(h[0], filters)]
            if len(hits) >= k or fetch >= total:
                return hits[:k]
            fetch = min(total, fetch * 4)

    def _passes(self, study_id: int, filters) -> bool:
        p = self._probs.get(study_id)
        if p is None:
            return False
        return all(bool(_OPS[op](p.get(name, np.nan), v)) for name, op, v in filters)

    def _result(self, row: StudyRow, score: float, snippet: np.ndarray | None) -> dict[str, Any]:
        out = {"study": row.key, "id": row.id, "report_id": row.report_id, "score": score, "depth_mm": None,
               "world_z_mm": None, "cell": None, "slice": None, "findings": row.probabilities}  # fmt: skip
        if snippet is not None:
            valid = np.asarray(row.depth_valid, bool)
            if valid.any():
                cos = row.depth @ snippet
                cell = int(np.argmax(np.where(valid, cos, -np.inf)))
                out.update(depth_mm=self.cell_depth_mm(cell), world_z_mm=float(row.depth_z_mm[cell]), cell=cell,
                           slice=int(row.depth_slices[cell]))
        return out

    def finding_logits(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """(ids (N,), logits (N, F), calibrated) of every study's zero-shot findings, from the stored disease
        embeddings and the checkpoint's prompts and calibration (computed once per opened library)."""
        if self._finding_logits is None:
            model = self.model
            ids, disease = self.store.vectors("disease", self.dim)
            with self._lock:
                prompts = prompt_embeddings(model, self.findings)
            margins = disease.astype(np.float64) @ (prompts.positive - prompts.negative).T
            logits, calibrated = calibrated_logits(model, margins, self.findings)
            self._finding_margins = margins
            self._finding_logits = (ids, logits, calibrated)
        return self._finding_logits

    def _ranked_finding(self, fq: FindingQuery, k: int | None, filters) -> list[tuple[int, float]]:
        """(id, probability) best first: p(finding) for a positive query, 1 - p for a negated one."""
        ids, logits, _ = self.finding_logits()
        col, sign = self.findings.index(fq.finding), (1.0 if fq.present else -1.0)
        z = logits[:, col] * sign
        # ties of the calibrated logit (a finding the train reports never mention gets a flat calibration) are
        # broken by the raw margin, so the order still follows what the model sees
        order = np.lexsort((-sign * self._finding_margins[:, col], -z))
        hits = []
        for j in order:
            i = int(ids[j])
            if filters and not self._passes(i, filters):
                continue
            hits.append((i, float(sigmoid(z[j]))))
            if k is not None and len(hits) >= k:
                break
        return hits

    def rank(self, text: str, over: str = "image", k: int | None = None, filters=None):
        """(hits [(id, score)] best first, finding query or None); k None: every study."""
        fq = match_finding(text, self.findings) if over == "image" else None
        if fq is not None:
            return self._ranked_finding(fq, k, filters), fq
        q, _ = self.text_embeddings(text)
        return self._ranked(q, over, k if k is not None else max(1, int(self.index(over).ntotal)), filters), None

    def search(self, text: str, k: int = 10, filters=None, over: str = "image") -> dict[str, Any]:
        """{"results": [{"study", "score", "depth_mm", "findings", ...}, ...]} best first; `ranking` says how
        (see the module doc), `finding` / `present` which finding a finding query named."""
        k = check_k(k)
        if over not in OVER:
            raise ConfigError(f"over must be one of {', '.join(OVER)}, got {over!r}")
        parsed = parse_filters(filters, self.findings)
        hits, fq = self.rank(text, over, k, parsed)
        _, s = self.text_embeddings(text)
        rows = self.store.rows([i for i, _ in hits], embeddings=True)
        out: dict[str, Any] = {"query": text, "over": over, "ranking": "similarity" if fq is None else "finding",
                               "finding": None if fq is None else fq.finding,
                               "present": None if fq is None else fq.present,
                               "calibrated": bool(self.finding_logits()[2] if fq is not None
                                                  else self.meta.get("calibrated"))}  # fmt: skip
        out["results"] = [self._result(r, sc, s) for r, (_, sc) in zip(rows, hits, strict=True)]
        return out

    def search_like(self, scan, k: int = 10, filters=None) -> dict[str, Any]:
        """Studies whose volume embedding is closest to that of `scan` (a path or `Volume`)."""
        k = check_k(k)
        parsed = parse_filters(filters, self.findings)
        model = self.model
        with self._lock:
            enc = encode_volume(model, scan)
        hits = self._ranked(normalize(enc.retrieval), "image", k, parsed)
        rows = self.store.rows([i for i, _ in hits], embeddings=False)
        return {"like": str(scan) if isinstance(scan, str | Path) else "scan", "over": "image",
                "results": [self._result(r, sc, None) for r, (_, sc) in zip(rows, hits, strict=True)]}

    # -- per-study views
    def study(self, study_id: int) -> StudyRow:
        row = self.store.get(study_id)
        if row is None:
            raise LibraryError(f"no study with id {study_id}")
        row.id = int(study_id)
        return row

    def heat(self, study_id: int, text: str) -> dict[str, Any]:
        """The sentence's score per depth cell of one study: cosine and softmax(cos / tau) over valid cells."""
        row = self.study(study_id)
        _, s = self.text_embeddings(text)
        valid = np.asarray(row.depth_valid, bool)
        cos = row.depth @ s
        probs = depth_probabilities(cos[None].astype(np.float64), valid, float(self.meta["localization_tau"]))[0]
        best = int(np.argmax(np.where(valid, cos, -np.inf)))
        cells = [{"cell": c, "z_mm": row.depth_z_mm[c], "slice": row.depth_slices[c], "valid": bool(valid[c]),
                  "cosine": float(cos[c]) if valid[c] else None, "probability": float(probs[c])}
                 for c in range(len(valid))]  # fmt: skip
        return {"study": row.key, "query": text, "best_cell": best, "best_slice": row.depth_slices[best],
                "depth_mm": self.cell_depth_mm(best), "world_z_mm": row.depth_z_mm[best], "cells": cells}

    def cell_depth_mm(self, cell: int) -> float:
        """`depth_mm` of a cell's centre: mm along the cell axis from the start edge of cell 0 (the meaning it has
        in pairs and metrics); its world z is `world_z_mm`."""
        return (int(cell) + 0.5) * float(self.meta.get("cell_mm", 12.0))
