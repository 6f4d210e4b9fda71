"""The `swca_volume` batch field of the swca objective (`radfinder.losses.objectives`): per sample, where its report's
findings lie in its volume (`radfinder.features.volume_profile`): the masks of the organs the report calls abnormal
(from the feature cache's anatomy coverage, when the cache has one) and the depth cells the report cites (the
dataset's mined references, `data.datasets[].pairs`). A (B, PROFILE_WIDTH) float tensor; a sample without either
part has zero presence flags and keeps the report-only spatial similarity.
"""

from __future__ import annotations

import numpy as np
import torch

from ..features.volume_profile import cited_profile, organ_profile, volume_profile_row
from ..text.anatomy import anatomy_texts
from .fields import FieldContext, FieldRow, register_batch_field

_MEMO: dict[tuple, np.ndarray] = {}  # content-keyed: record, report, cited cells, mask, grid


def _abnormal(row: FieldRow) -> list[str]:
    rec = row.record
    return [a for a, t in anatomy_texts(rec.findings or "", rec.impressions or "").items() if t.abnormal]


def _profile(row: FieldRow) -> np.ndarray:
    fr = row.features
    cropped = "crop_depth_offset" in (fr.meta or {})
    # a mirrored scan would need its organ cells mirrored too: it keeps the report-only part of the organ term
    cov = None if row.mirrored_lr else fr.anatomy
    cells = [row.depth_map(s.depth_cell) for s in row.train_source.snippets.get(row.record.key, [])]
    cells = tuple(int(c) for c in cells if c is not None)
    key = (row.record.key, row.record.report_text, cells, None if cov is None else cov.mask_hash,
           None if cov is None else cov.groups_hash, fr.n_depth_cells, cropped)  # fmt: skip
    got = _MEMO.get(key)
    if got is None:
        organs = organ_profile(cov, _abnormal(row)) if cov is not None else None
        cited = cited_profile(cells, fr.n_depth_cells, None if cropped else cov)
        got = _MEMO[key] = volume_profile_row(organs, cited)
    return got


def swca_volume(rows: list[FieldRow], ctx: FieldContext) -> torch.Tensor:
    """(B, PROFILE_WIDTH) volume profiles (module doc), memoised by content."""
    return torch.from_numpy(np.stack([_profile(r) for r in rows]))


register_batch_field("swca_volume", swca_volume)
