"""The library's metadata store: one SQLite file (`library.sqlite`) that is the source of truth.

Every study row carries what search and the viewer need without touching the model again: the volume path as
`radfinder.io.load_volume` reads it (with series and loader options), the report, labels, spacing, the L2-normalised
volume, disease and report embeddings, the per-depth-cell embeddings and their geometry, the zero-shot finding
probabilities, the mined slice references and a PNG thumbnail. The FAISS indexes (`index.py`) are rebuilt from
these rows, so a lost or stale index file is never a lost library.

Arrays are stored as raw little-endian float32 bytes with their shape (never pickle). Writes commit one study at a
time (WAL journal, busy timeout): a killed build keeps every finished study and the next run skips them; several
`torchrun` processes may write to the same file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RadfinderError

DB_NAME = "library.sqlite"
SCHEMA_VERSION = 1


class LibraryError(RadfinderError):
    """A library folder is missing, damaged, or does not match the checkpoint or the request."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT UNIQUE NOT NULL,
    report_id TEXT NOT NULL,
    patient TEXT NOT NULL,
    dataset TEXT NOT NULL,
    split TEXT NOT NULL,
    path TEXT NOT NULL,
    series TEXT,
    load_opts TEXT NOT NULL,
    findings_text TEXT NOT NULL,
    impressions_text TEXT NOT NULL,
    labels TEXT NOT NULL,
    spacing TEXT NOT NULL,
    source_shape TEXT NOT NULL,
    source_affine TEXT NOT NULL,
    slice_axis INTEGER NOT NULL,
    depth_z_mm TEXT NOT NULL,
    depth_valid TEXT NOT NULL,
    depth_slices TEXT NOT NULL,
    probabilities TEXT NOT NULL,
    refs TEXT NOT NULL,
    retrieval BLOB NOT NULL,
    disease BLOB NOT NULL,
    report_emb BLOB,
    depth BLOB NOT NULL,
    thumbnail BLOB NOT NULL,
    added_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE TABLE IF NOT EXISTS failures (key TEXT PRIMARY KEY, path TEXT NOT NULL, error TEXT NOT NULL);
"""


def f32_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def f32_array(b: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4").reshape(-1, dim).astype(np.float32)


@dataclass
class StudyRow:
    """One library entry (a volume with its report); `id` is the row id FAISS stores."""

    key: str
    report_id: str
    patient: str
    dataset: str
    split: str
    path: str
    series: str | None
    load_opts: dict[str, Any]
    findings_text: str
    impressions_text: str
    labels: list[float]
    spacing: list[float]
    source_shape: list[int]
    source_affine: list[list[float]]
    slice_axis: int
    depth_z_mm: list[float]
    depth_valid: list[bool]
    depth_slices: list[int]
    probabilities: dict[str, float]
    refs: list[dict[str, Any]]
    retrieval: np.ndarray
    disease: np.ndarray
    report_emb: np.ndarray | None
    depth: np.ndarray
    thumbnail: bytes
    id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def report_text(self) -> str:
        return f"Findings: {self.findings_text}\nImpressions: {self.impressions_text}\n"

    @property
    def has_report(self) -> bool:
        return bool(self.findings_text.strip() or self.impressions_text.strip())

    @property
    def n_slices(self) -> int:
        return int(self.source_shape[self.slice_axis])

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no embeddings, no thumbnail)."""
        return {
            "id": self.id, "study": self.key, "report_id": self.report_id, "patient": self.patient,
            "dataset": self.dataset, "split": self.split, "path": self.path, "series": self.series,
            "findings_text": self.findings_text, "impressions_text": self.impressions_text,
            "labels": self.labels, "spacing": self.spacing, "source_shape": self.source_shape,
            "slice_axis": self.slice_axis, "n_slices": self.n_slices, "depth_z_mm": self.depth_z_mm,
            "depth_valid": self.depth_valid, "depth_slices": self.depth_slices,
            "findings": self.probabilities, "references": self.refs,
        }  # fmt: skip


_JSON_COLS = ("load_opts", "labels", "spacing", "source_shape", "source_affine", "depth_z_mm", "depth_valid",
              "depth_slices", "probabilities", "refs")  # fmt: skip
_TEXT_COLS = ("key", "report_id", "patient", "dataset", "split", "path", "series", "findings_text",
              "impressions_text", "slice_axis")  # fmt: skip
_LIGHT = ", ".join(("id",) + _TEXT_COLS + _JSON_COLS)


class LibraryStore:
    """Thread-safe access to `library.sqlite` (one connection guarded by a lock)."""

    def __init__(self, root: str | Path, *, create: bool = False):
        self.root = Path(root)
        self.path = self.root / DB_NAME
        if not self.path.is_file():
            if not create:
                raise LibraryError(f"{self.root}: not a radfinder library (no {DB_NAME})")
            self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=120.0, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=120000")
            if create:
                self._db.executescript(_SCHEMA)
            elif self._db.execute("SELECT name FROM sqlite_master WHERE name='studies'").fetchone() is None:
                raise LibraryError(f"{self.path}: no studies table (not a radfinder library)")
        except sqlite3.DatabaseError as exc:
            raise LibraryError(f"{self.path}: cannot open the library database ({exc})") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- meta
    def get_meta(self) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute("SELECT name, value FROM meta").fetchall()
        return {k: json.loads(v) for k, v in rows}

    def set_meta(self, values: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for k, v in values.items():
                    self._db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (k, json.dumps(v)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- studies
    def keys(self) -> dict[str, str]:
        """key -> volume path of every stored study."""
        with self._lock:
            return dict(self._db.execute("SELECT key, path FROM studies").fetchall())

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM studies").fetchone()[0])

    def add(self, row: StudyRow) -> int:
        """Insert one study in its own transaction; returns its id. An existing key is an error."""
        values = {c: getattr(row, c) for c in _TEXT_COLS}
        values.update({c: json.dumps(getattr(row, c)) for c in _JSON_COLS})
        values.update(
            retrieval=f32_bytes(row.retrieval), disease=f32_bytes(row.disease), depth=f32_bytes(row.depth),
            report_emb=None if row.report_emb is None else f32_bytes(row.report_emb), thumbnail=row.thumbnail,
        )  # fmt: skip
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._lock:
            try:
                cur = self._db.execute(f"INSERT INTO studies ({cols}) VALUES ({marks})", tuple(values.values()))
                self._db.execute("DELETE FROM failures WHERE key = ?", (row.key,))
            except sqlite3.IntegrityError as exc:
                raise LibraryError(f"study {row.key!r} is already in the library") from exc
            return int(cur.lastrowid)

    def record_failure(self, key: str, path: str, error: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO failures(key, path, error) VALUES (?, ?, ?)", (key, path, error))

    def failures(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, error FROM failures").fetchall())

    def _row(self, values: tuple, names: list[str], dim: int | None) -> StudyRow:
        d = dict(zip(names, values, strict=True))
        for c in _JSON_COLS:
            d[c] = json.loads(d[c])
        if dim is not None:
            d["retrieval"] = f32_array(d["retrieval"], dim)[0]
            d["disease"] = f32_array(d["disease"], dim)[0]
            d["depth"] = f32_array(d["depth"], dim)
            d["report_emb"] = None if d["report_emb"] is None else f32_array(d["report_emb"], dim)[0]
        else:
            d.update(retrieval=np.zeros(0, np.float32), disease=np.zeros(0, np.float32), report_emb=None,
                     depth=np.zeros((0, 0), np.float32), thumbnail=b"")  # fmt: skip
        return StudyRow(**d)

    def get(self, study_id: int, *, embeddings: bool = True) -> StudyRow | None:
        dim = self.get_meta().get("dim") if embeddings else None
        cols = "*" if embeddings else _LIGHT
        with self._lock:
            cur = self._db.execute(f"SELECT {cols} FROM studies WHERE id = ?", (int(study_id),))
            values = cur.fetchone()
            names = [c[0] for c in cur.description]
        if values is None:
            return None
        if embeddings:
            values, names = values[:-1], names[:-1]  # added_at
        return self._row(values, names, dim)

    def rows(self, ids: list[int], *, embeddings: bool = False) -> list[StudyRow]:
        """Rows for `ids`, in the order given (missing ids left out)."""
        out = [self.get(i, embeddings=embeddings) for i in ids]
        return [r for r in out if r is not None]

    def thumbnail(self, study_id: int) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT thumbnail FROM studies WHERE id = ?", (int(study_id),)).fetchone()
        return None if row is None else bytes(row[0])

    def vectors(self, column: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (N,), vectors (N, dim)) of one embedding column, rows with a NULL left out."""
        if column not in ("retrieval", "disease", "report_emb"):
            raise LibraryError(f"unknown embedding column {column!r}")
        with self._lock:
            rows = self._db.execute(f"SELECT id, {column} FROM studies WHERE {column} IS NOT NULL ORDER BY id")
            rows = rows.fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        return ids, np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim).copy()

    def probabilities(self) -> Iterator[tuple[int, dict[str, float]]]:
        with self._lock:
            rows = self._db.execute("SELECT id, probabilities FROM studies").fetchall()
        for i, p in rows:
            yield int(i), json.loads(p)
