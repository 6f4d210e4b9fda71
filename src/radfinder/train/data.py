"""Training data: records of every dataset, their snippet pairs and labels, and a resumable mixing order.

The order of one epoch is a pure function of (seed, epoch): each dataset contributes `weight / sum(weights)` of
the epoch's samples (cycling through its own shuffled records when it is over-sampled), and the union is
shuffled. The data-order state of a run is therefore just (epoch, step in epoch); resuming regenerates the same
order. Per-sample randomness (which snippets, which prompt phrasing, crops) is drawn from generators seeded by
the sample's position in the run, so it does not depend on how a global batch is split over ranks.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.ctrate import DatasetError, load_ctrate
from ..data.manifest import load_manifest
from ..data.pairs import PairsFile, read_pairs
from ..data.records import StudyRecord, labels_from_row
from ..errors import ConfigError
from ..text.findings import CTRATE_FINDINGS
from .config import DatasetSection

SNIPPET_STREAM = 1
PROMPT_STREAM = 2
AUGMENT_STREAM = 3


@dataclass(frozen=True)
class Snippet:
    text: str
    depth_cell: int


@dataclass
class TrainSource:
    """One dataset of the mix: its records (in loader order) and the snippets of each record key."""

    name: str
    section: DatasetSection
    records: list[StudyRecord]
    snippets: dict[str, list[Snippet]] = field(default_factory=dict)
    pair_counts: dict[str, int] = field(default_factory=dict)  # see `pair_counts`
    pairs_spec_hash: str | None = None  # the spec the pairs were mined for (None: not recorded)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for r in self.records:
            h.update(r.key.encode())
            h.update(r.report_text.encode())
            h.update(np.asarray(r.labels, dtype=np.float32).tobytes())
        for key in sorted(self.snippets):
            for s in self.snippets[key]:
                h.update(f"{key}|{s.depth_cell}|{s.text}".encode())
        return h.hexdigest()[:16]


def load_records(section: DatasetSection, findings: Sequence[str] | None = None) -> list[StudyRecord]:
    """The section's records; `findings`: the label vocabulary's names when it is not the 18 CT-RATE findings
    (then the labels come from the section's labels_csv, read by those column names)."""
    if findings is not None and tuple(findings) != CTRATE_FINDINGS:
        if not section.labels_csv:
            raise ConfigError(f"dataset {section.name or section.root!r}: the label vocabulary is not ctrate18, so "
                              "its labels must come from data.datasets[].labels_csv with one column per finding")
        records = load_records(section.model_copy(update={"labels_csv": None}))
        apply_labels_csv(records, section.labels_csv, findings, every=True)
        return records
    if section.kind == "ctrate":
        records = load_ctrate(section.root, split=section.split, mode=section.mode, labels_csv=section.labels_csv,
                              require_files=False)
    elif section.kind == "manifest":
        records = load_manifest(section.root, split=section.split or None)
        if section.labels_csv:
            apply_labels_csv(records, section.labels_csv)
    else:  # pragma: no cover - pydantic restricts kind
        raise ConfigError(f"unknown dataset kind {section.kind!r}")
    if not records:
        raise DatasetError(f"{section.root}: split {section.split!r} has no records")
    return records


def apply_labels_csv(records: list[StudyRecord], path: str | Path, findings: Sequence[str] = CTRATE_FINDINGS,
                     every: bool = False) -> None:
    """Replace the labels of records found in a CSV keyed by VolumeName (or `id` / `key`), columns `findings`;
    `every`: records missing from the CSV get all -1 (unknown) labels of that width."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"labels file not found: {path}")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    table = {}
    for row in rows:
        key = row.get("VolumeName") or row.get("id") or row.get("key")
        if key is None:
            raise DatasetError(f"{path}: needs a VolumeName (or id) column")
        table[str(key).removesuffix(".nii.gz")] = row
    for r in records:
        if r.key in table:
            r.labels = labels_from_row(table[r.key], tuple(findings))
        elif every:
            r.labels = labels_from_row({}, tuple(findings))


def load_pairs(path: str | Path, keys: set[str], *, spec_hash: str | None = None,
               what: str = "") -> tuple[dict[str, list[Snippet]], PairsFile]:
    """Snippets per volume key from a pairs.jsonl file (`radfinder.data.pairs.read_pairs`: lines of keys outside
    `keys` are set aside and counted; a file mined for another spec than `spec_hash` is refused)."""
    pf = read_pairs(path, keys, spec_hash=spec_hash, what=what)
    out: dict[str, list[Snippet]] = {}
    for row in pf.rows:
        out.setdefault(row.key, []).append(Snippet(row.snippet, row.depth_cell))
    return out, pf


def build_sources(sections: list[DatasetSection], findings: Sequence[str] | None = None) -> list[TrainSource]:
    if not sections:
        raise ConfigError("data.datasets is empty: name at least one dataset to train on")
    sources = []
    for i, sec in enumerate(sections):
        records = load_records(sec, findings)
        name = sec.name or f"{sec.kind}{i}"
        snippets: dict[str, list[Snippet]] = {}
        counts: dict[str, int] = {}
        if sec.pairs:
            spec_hash = _cache_spec_hash(sec.features) if sec.features else None
            snippets, pf = load_pairs(sec.pairs, {r.key for r in records}, spec_hash=spec_hash,
                                      what=f"the feature cache {sec.features}")
            counts = pair_counts(pf, sec.split)
        sources.append(TrainSource(name, sec, records, snippets, counts,
                                   pf.spec_hash if sec.pairs else None))
    return sources


def _cache_spec_hash(features: str) -> str | None:
    """The preprocessing spec hash in a feature cache's header (None when the folder is no cache: the feature
    provider reports that)."""
    path = Path(features) / "cache.json"
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text())["spec_hash"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: unreadable feature-cache header ({exc})") from exc


def pair_counts(pf: PairsFile, split: str | None) -> dict[str, int]:
    """What became of a pairs file's lines for one dataset: ``read``, ``kept``; dropped ``missing_scan`` (a line of
    this split whose volume is not among the records) and ``empty_snippet``; ``other_split`` lines are another split's
    (not dropped: they belong to another dataset or to evaluation)."""
    other = pf.counts.get("other_keys", 0)
    missing = pf.other_keys_by_split.get(split, 0) if split else 0
    other -= missing
    return {"read": pf.counts.get("read", 0), "kept": pf.counts.get("kept", 0), "missing_scan": missing,
            "empty_snippet": pf.counts.get("empty_snippet", 0), "other_split": other}


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


def sample_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """Generator for one sample of the run (index = position in the run's sample sequence) and one purpose."""
    return _rng(seed, stream, index >> 32, index)


class MixedOrder:
    """Epoch orders over several sources: (source index, record index) pairs; see module doc."""

    def __init__(self, sizes: list[int], weights: list[float], seed: int, samples_per_epoch: int | None = None):
        if not sizes or min(sizes) < 1:
            raise ConfigError("every dataset needs at least one record")
        self.sizes = list(sizes)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.seed = int(seed)
        self.epoch_size = int(samples_per_epoch or sum(sizes))
        if self.epoch_size < 1:
            raise ConfigError("samples_per_epoch must be >= 1")
        self.counts = self._counts()

    def _counts(self) -> list[int]:
        share = self.weights / self.weights.sum() * self.epoch_size
        counts = np.floor(share).astype(np.int64)
        # largest remainders get the leftover samples, so the counts add up exactly
        for i in np.argsort(-(share - counts), kind="stable")[: self.epoch_size - int(counts.sum())]:
            counts[i] += 1
        return counts.tolist()

    def epoch(self, epoch: int) -> np.ndarray:
        """(epoch_size, 2) int64 array of (source, record) for this epoch."""
        parts = []
        for s, (size, count) in enumerate(zip(self.sizes, self.counts, strict=True)):
            if count == 0:
                continue
            reps = -(-count // size)
            idx = np.concatenate([_rng(self.seed, 11, epoch, s, r).permutation(size) for r in range(reps)])[:count]
            parts.append(np.stack([np.full(count, s), idx], axis=1))
        order = np.concatenate(parts)
        return order[_rng(self.seed, 12, epoch).permutation(len(order))]
