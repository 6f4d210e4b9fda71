"""Extra per-sample micro-batch fields, as a registry (what an objective lists in `Objective.batch_fields`).

The core fields of `MicroBatch` (features, texts, labels, prompt_variant, snippets) are always there. Anything else
an objective needs per sample (fVLM: anatomy valid/normal flags (B, A), per-anatomy text ids (B, A), per-token
anatomy coverage) is a *batch field*: a provider registered here under a name and called once per micro-batch with
its rows; its value lands in `mb.extras[name]`. Contract:

    register_batch_field(name, fn)      fn(rows: list[FieldRow], ctx: FieldContext) -> value

* `rows[i]` is sample i of the micro-batch: its dataset index and `TrainSource`, its `StudyRecord`, its global sample
  index (seed the randomness of a field with it, never with a counter), the `FeatureRecord` the model reads (possibly
  cropped / flipped: `depth_map` maps an original depth cell into it, `mirrored_lr` says whether sides were swapped).
* The value is a tensor whose first dimension is B (moved to the training device with the batch: floating point
  tensors also take the parameter dtype, others keep theirs), or a list of B Python objects (kept as is).
* A field must be a pure function of the rows (the same on every rank and on resume); cache per record key when it is
  costly (`cached_per_record`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..text.anatomy import anatomy_texts

CORE_FIELDS = frozenset({"labels", "prompt_variant", "snippets", "texts", "features"})


@dataclass(frozen=True)
class FieldRow:
    source: int
    train_source: Any  # radfinder.train.data.TrainSource
    record: Any  # radfinder.data.records.StudyRecord
    sample_index: int
    features: Any  # radfinder.features.store.FeatureRecord
    depth_map: Callable[[int], int | None]
    mirrored_lr: bool


@dataclass(frozen=True)
class FieldContext:
    seed: int
    label_names: tuple[str, ...]


BatchFieldFn = Callable[[list[FieldRow], FieldContext], Any]
_FIELDS: dict[str, BatchFieldFn] = {}


def register_batch_field(name: str, fn: BatchFieldFn, *, replace: bool = False) -> None:
    if name in CORE_FIELDS:
        raise ValueError(f"{name!r} is a core micro-batch field")
    if name in _FIELDS and not replace:
        raise ValueError(f"batch field {name!r} is already registered")
    _FIELDS[name] = fn


def batch_field_names() -> list[str]:
    return list(_FIELDS)


def check_batch_fields(names: Sequence[str]) -> list[str]:
    """The extra (non-core) fields among `names`; a clear error for one without a provider."""
    extra = [n for n in names if n not in CORE_FIELDS]
    missing = [n for n in extra if n not in _FIELDS]
    if missing:
        raise ConfigError(f"no provider registered for batch field(s) {missing} "
                          f"(registered: {', '.join(_FIELDS) or 'none'}; radfinder.train.fields)")
    return extra


def provide(names: Sequence[str], rows: list[FieldRow], ctx: FieldContext) -> dict[str, Any]:
    return {n: _FIELDS[n](rows, ctx) for n in names}


def cached_per_record(fn: Callable[[FieldRow, FieldContext], Any]) -> Callable[[FieldRow, FieldContext], Any]:
    """Memoise a per-row function within the process by (record key, its report text, mirrored): keys alone repeat
    across datasets (two cohorts can both hold a `toy_0000`), the text makes the entry specific to the record."""
    memo: dict[tuple[str, str, bool], Any] = {}

    def wrapper(row: FieldRow, ctx: FieldContext) -> Any:
        k = (row.record.key, row.record.report_text, row.mirrored_lr)
        if k not in memo:
            memo[k] = fn(row, ctx)
        return memo[k]

    return wrapper


@cached_per_record
def _abnormal_anatomies_of(row: FieldRow, ctx: FieldContext) -> np.ndarray:
    rec = row.record
    texts = anatomy_texts(rec.findings or "", rec.impressions or "")
    return np.array([t.abnormal for t in texts.values()], dtype=bool)


def report_abnormal_anatomies(rows: list[FieldRow], ctx: FieldContext) -> torch.Tensor:
    """(B, A) bool: the anatomies each report calls abnormal (rule sentence assignment of the report's text, never
    ground truth), A = the anatomies of the built-in text rules."""
    return torch.from_numpy(np.stack([_abnormal_anatomies_of(r, ctx) for r in rows]))


register_batch_field("report_abnormal_anatomies", report_abnormal_anatomies)
