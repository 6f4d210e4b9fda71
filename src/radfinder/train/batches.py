"""Micro-batches: feature grids, report texts, labels, snippets and prompt choices of a set of samples.

Feature grids come from a `FeatureProvider`: the frozen-feature cache (`CachedFeatures`) or, for raw-volume
training, `radfinder.train.raw.RawFeatures` (crop + flips + the frozen window encoder on the fly). Both return a
`FeatureRecord` and a function mapping a snippet's depth cell into that record's (possibly cropped, flipped) grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from ..data.records import StudyRecord
from ..errors import ConfigError
from ..features.collate import collate_features
from ..features.store import FeatureRecord, FeatureStore
from ..text.laterality import swap_laterality
from .data import PROMPT_STREAM, SNIPPET_STREAM, Snippet, TrainSource, sample_rng
from .fields import FieldContext, FieldRow, provide

DepthMap = Callable[[int], int | None]  # original depth cell -> cell in the returned grid (None: cropped away)


class FeatureProvider(Protocol):
    def get(self, source: int, record: StudyRecord, sample_index: int) -> tuple[FeatureRecord, DepthMap]: ...


def _identity(cell: int) -> int:
    return cell


def _same(text: str) -> str:
    return text


class CachedFeatures:
    """Features from each source's frozen-feature cache directory (opened once, checked against the model)."""

    def __init__(self, sources: Sequence[TrainSource], feature_dim: int):
        self.stores: list[FeatureStore] = []
        for src in sources:
            if not src.section.features:
                raise ConfigError(
                    f"dataset {src.name!r} has no `features` cache directory; set data.datasets[].features "
                    "(extract with `radfinder features`) or train with data.source: raw"
                )
            store = FeatureStore.open(src.section.features)
            if store.feature_dim != feature_dim:
                raise ConfigError(
                    f"{store.root}: features are {store.feature_dim}-d but the model's window features are "
                    f"{feature_dim}-d (window_encoder.feature_dim); the cache was made with another backbone"
                )
            missing = [r.key for r in src.records if r.key not in store]
            if missing:
                raise ConfigError(
                    f"{store.root}: {len(missing)} of {len(src.records)} records of dataset {src.name!r} have no "
                    f"cached features (e.g. {missing[0]}); run feature extraction for them first"
                )
            self.stores.append(store)

    def get(self, source: int, record: StudyRecord, sample_index: int) -> tuple[FeatureRecord, DepthMap]:
        store = self.stores[source]
        fr = store.read(record.key)
        if fr.axis2.shape[3] != store.spec.depth_tokens_per_window:
            raise ConfigError(
                f"{store.root}: {record.key} has {fr.axis2.shape[3]} depth tokens per window but the cache's "
                f"preprocessing spec has {store.spec.depth_tokens_per_window} depth cells per window: snippet cells "
                "would point at the wrong depth; extract the features with an encoder made for this spec")
        return fr, _identity

    def identity(self) -> list[dict]:
        return [{"spec_hash": s.spec.hash(), "backbone_hash": s.backbone["hash"], "feature_dim": s.feature_dim}
                for s in self.stores]


@dataclass
class MicroBatch:
    keys: list[str]
    sample_index: list[int]
    texts: list[str]  # "Findings: ...\nImpressions: ...\n"
    labels: torch.Tensor  # (B, Q) int64 in {-1, 0, 1}
    prompt_variant: torch.Tensor  # (B, Q) int64, the phrasing drawn for random_1
    cls: torch.Tensor
    patch_average: torch.Tensor
    axis2: torch.Tensor
    window_mask: torch.Tensor
    grid_size: torch.Tensor
    snippet_texts: list[str]
    snippet_scan: torch.Tensor  # (S,) row of the scan each snippet belongs to
    snippet_cell: torch.Tensor  # (S,) target depth cell in that scan's grid
    extras: dict[str, Any] = field(default_factory=dict)  # registered batch fields (`radfinder.train.fields`)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def n_snippets(self) -> int:
        return len(self.snippet_texts)

    def to(self, device: torch.device, dtype: torch.dtype) -> MicroBatch:
        def f(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, dtype=dtype) if t.is_floating_point() else t.to(device)

        extras = {k: f(v) if isinstance(v, torch.Tensor) else v for k, v in self.extras.items()}
        return MicroBatch(self.keys, self.sample_index, self.texts, f(self.labels), f(self.prompt_variant),
                          f(self.cls), f(self.patch_average), f(self.axis2), f(self.window_mask), f(self.grid_size),
                          self.snippet_texts, f(self.snippet_scan), f(self.snippet_cell), extras)


def draw_snippets(snippets: list[Snippet], k: int, seed: int, index: int) -> list[Snippet]:
    if k <= 0 or not snippets:
        return []
    if len(snippets) <= k:
        return list(snippets)
    pick = sample_rng(seed, SNIPPET_STREAM, index).choice(len(snippets), size=k, replace=False)
    return [snippets[i] for i in sorted(pick)]


def make_micro_batch(
    items: Sequence[tuple[int, int, int]],
    sources: Sequence[TrainSource],
    provider: FeatureProvider,
    *,
    seed: int,
    n_questions: int,
    n_variants: int,
    max_snippets: int,
    fields: Sequence[str] = (),
    label_names: Sequence[str] = (),
) -> tuple[MicroBatch, int]:
    """items: (source, record, sample index). Returns the batch and how many snippets fell outside their scan.
    `fields`: registered extra batch fields to fill (`radfinder.train.fields`)."""
    feats, texts, labels, variants, keys = [], [], [], [], []
    sn_text, sn_scan, sn_cell = [], [], []
    dropped = 0
    rows: list[FieldRow] = []
    for row, (s, r, idx) in enumerate(items):
        src = sources[s]
        rec = src.records[r]
        fr, depth_map = provider.get(s, rec, idx)
        # a volume mirrored left-right is paired with text whose sides are swapped too (`text.laterality`)
        mirrored = bool(fr.meta and fr.meta.get("mirrored_lr"))
        side = swap_laterality if mirrored else _same
        if fields:
            rows.append(FieldRow(s, src, rec, idx, fr, depth_map, mirrored))
        feats.append(fr)
        keys.append(rec.key)
        texts.append(side(rec.report_text))
        lab = np.asarray(rec.labels, dtype=np.float32)
        if lab.shape != (n_questions,):
            raise ConfigError(f"{rec.key}: {lab.shape[0]} labels, the prompt bank has {n_questions} findings")
        labels.append(lab.astype(np.int64))
        variants.append(sample_rng(seed, PROMPT_STREAM, idx).integers(0, n_variants, n_questions))
        n_cells = fr.n_depth_cells
        for sn in draw_snippets(src.snippets.get(rec.key, []), max_snippets, seed, idx):
            cell = depth_map(sn.depth_cell)
            if cell is None or not 0 <= cell < n_cells:
                dropped += 1
                continue
            sn_text.append(side(sn.text))
            sn_scan.append(row)
            sn_cell.append(cell)
    fb = collate_features(feats)
    batch = MicroBatch(
        keys=keys,
        sample_index=[i for _, _, i in items],
        texts=texts,
        labels=torch.from_numpy(np.stack(labels)),
        prompt_variant=torch.from_numpy(np.stack(variants).astype(np.int64)),
        cls=fb.cls,
        patch_average=fb.patch_average,
        axis2=fb.axis2,
        window_mask=fb.window_mask,
        grid_size=fb.grid_size,
        snippet_texts=sn_text,
        snippet_scan=torch.tensor(sn_scan, dtype=torch.long),
        snippet_cell=torch.tensor(sn_cell, dtype=torch.long),
        extras=provide(fields, rows, FieldContext(seed, tuple(label_names))) if fields else {},
    )
    return batch, dropped
