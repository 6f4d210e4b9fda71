"""The `anatomy` batch field of the fvlm objective (`radfinder.losses.fvlm_objective`): per sample, an
`AnatomyStudy` (spatial tokens touching an anatomy, their coverage, present/cut flags, per-anatomy report texts with
normal flags and content-derived text ids), for every anatomy of its feature cache and of the text rules; the leaf
producers collate it for the model's own anatomies. Needs features with spatial tokens and anatomy coverage
(`radfinder extract-features ... --masks DIR|auto`); a scan without a segmentation has every anatomy invalid.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..features.anatomy_batch import AnatomyStudy, AnatomyTextCache, anatomy_study
from .fields import FieldContext, FieldRow, register_batch_field

_TEXTS: list[AnatomyTextCache] = []  # one per process, made on first use (per-report texts are memoised in it)


def _texts() -> AnatomyTextCache:
    if not _TEXTS:
        _TEXTS.append(AnatomyTextCache())
    return _TEXTS[0]


def anatomy_studies(rows: list[FieldRow], ctx: FieldContext) -> list[AnatomyStudy]:
    out = []
    for r in rows:
        if r.mirrored_lr or "crop_depth_offset" in (r.features.meta or {}):
            raise ConfigError(f"{r.record.key}: the fvlm objective trains on the cached features as extracted "
                              "(data.source: features); crops and flips would move the anatomy masks")  # fmt: skip
        out.append(anatomy_study(r.features, r.record, _texts()))
    return out


register_batch_field("anatomy", anatomy_studies)
