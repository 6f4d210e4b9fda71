"""The `fvlm` training objective: fVLM's anatomy-level contrast on the step's gathered anatomy leaves.

Leaves (produced per micro-batch from its `anatomy` batch field: a list of `AnatomyStudy`, one per sample, collated
for the model's anatomies by `radfinder.features.anatomy_batch.collate_anatomy`, or an `AnatomyBatch` as it is):

* `anatomy_image` (B, A, P): the model's anatomy head over the frozen spatial tokens inside each anatomy's mask;
* `anatomy_text` (B, A, P): each per-anatomy report text through the model's text tower and text head
  (`encode_anatomy_texts`: the whole text or the mean of its sentences, then the report head or the anatomy config's
  own linear text projection); identical texts and sentences of a micro-batch are encoded once;
* `anatomy_temperature`: the model's `FvlmTemperature` parameter (clamped to [0.001, 0.5] when read).

The objective is `fvlm_loss_terms` (distributed form under a process group: each rank's share, the shares summing
to the single-process loss on the concatenated global batch) on those leaves with the batch's `valid`, `normal` and
content-derived `text_ids`; it logs `fvlm` (the global loss) and `fvlm/<anatomy>` (each anatomy's term, 0 where
it was skipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError
from ..features.anatomy_batch import AnatomyBatch, collate_anatomy
from . import objectives as _builtin_objectives  # noqa: F401  (RadFinder's three register first)
from .fvlm import FvlmOutput, fvlm_loss_terms
from .registry import Objective, ObjectiveContext, StepTerm, register_leaves, register_objective

FIELD = "anatomy"  # the micro-batch field (mb.extras["anatomy"]): list of AnatomyStudy, or an AnatomyBatch
_COLLATED = "_anatomy_collated"


def _require_head(model) -> None:
    if getattr(model, "anatomy_head", None) is None:
        raise ConfigError("the fvlm objective needs a model with an anatomy head (model config section `anatomy`, "
                          "or model.anatomy in a training config)")  # fmt: skip


def anatomy_field(mb: Any, model: Any) -> AnatomyBatch:
    """The micro-batch's `AnatomyBatch` for `model`'s anatomies, on the model's device (collated once per batch)."""
    _require_head(model)
    extras = getattr(mb, "extras", None)
    value = extras.get(FIELD) if isinstance(extras, dict) else None
    if value is None:
        raise ConfigError("the fvlm objective needs the micro-batch field 'anatomy' (anatomy texts and coverage)")
    if isinstance(value, AnatomyBatch):
        return value
    cfg = model.config.anatomy
    names = list(model.anatomy_head.names)
    cached = extras.get(_COLLATED)
    if cached is not None and cached.names == names:
        return cached
    param = next(model.anatomy_head.parameters())
    ab = collate_anatomy(value, names, exclude_cut=cfg.exclude_cut, strip=cfg.strip_template)
    ab = ab.to(param.device, param.dtype)
    extras[_COLLATED] = ab
    return ab


def anatomy_image_leaf(sm: Any, mb: Any) -> tuple[torch.Tensor]:
    """(B, A, P) anatomy embeddings of a micro-batch (step module `sm`: .model, .autocast(), .loss_dtype)."""
    ab = anatomy_field(mb, sm.model)
    with sm.autocast():
        out = sm.model.encode_anatomy(ab.tokens, ab.coverage)
    return (out.embeddings.to(sm.loss_dtype),)


def encode_unique_texts(model: Any, texts: Sequence[str]) -> torch.Tensor:
    """(len(texts), P) anatomy text embeddings (`RadFinderModel.encode_anatomy_texts`: each distinct text or
    sentence encoded once)."""
    return model.encode_anatomy_texts(texts)


def anatomy_text_leaf(sm: Any, mb: Any) -> tuple[torch.Tensor]:
    """(B, A, P) embeddings of the per-anatomy report texts of a micro-batch."""
    ab = anatomy_field(mb, sm.model)
    b, a = len(ab.texts), len(ab.names)
    with sm.autocast():
        emb = encode_unique_texts(sm.model, ab.flat_texts())
    return (emb.to(sm.loss_dtype).reshape(b, a, -1),)


def anatomy_temperature_param(model: Any) -> tuple[torch.Tensor]:
    """fVLM's learnable temperature (clamped in place first, so the value used is always inside its range)."""
    _require_head(model)
    return (model.anatomy_temperature(),)


def _collated(mb: Any, model: Any | None) -> AnatomyBatch:
    if model is not None:
        return anatomy_field(mb, model)
    extras = getattr(mb, "extras", None) or {}
    value = extras.get(_COLLATED, extras.get(FIELD))
    if not isinstance(value, AnatomyBatch):  # the leaf producers collate it before any loss runs
        raise ConfigError("the fvlm objective ran before its leaves were produced (no collated anatomy batch)")
    return value


def fvlm_step(
    model: Any,
    image: torch.Tensor,
    text: torch.Tensor,
    micro_batches: Sequence[Any],
    temperature: torch.Tensor,
    *,
    local: bool = False,
) -> tuple[FvlmOutput, dict[str, float]]:
    """The fVLM loss on leaves concatenated over this rank's micro-batches, and its log entries (`model`: the model
    whose anatomies the batches are collated for; None: the batches' collated form from the leaf producers)."""
    fields = [_collated(mb, model) for mb in micro_batches]
    valid = torch.cat([f.valid for f in fields]).to(image.device)
    normal = torch.cat([f.normal for f in fields]).to(image.device)
    ids = torch.cat([f.text_ids for f in fields]).to(image.device)
    out = fvlm_loss_terms(image, text, valid, normal, ids, temperature, local=local)
    names = fields[0].names
    logs = {"fvlm": float(out.per_anatomy.sum())}
    logs.update({f"fvlm/{n}": float(out.per_anatomy[i]) for i, n in enumerate(names)})
    return out, logs


def log_keys(names: Sequence[str]) -> tuple[str, ...]:
    return ("fvlm", *(f"fvlm/{n}" for n in names))


def _fvlm(ctx: ObjectiveContext) -> StepTerm:
    lv = ctx.leaves
    out, logs = fvlm_step(None, lv["anatomy_image"], lv["anatomy_text"], ctx.micro_batches, lv["anatomy_temperature"])
    return StepTerm(loss=out.loss, value=logs["fvlm"], logs={k: v for k, v in logs.items() if k != "fvlm"})


register_leaves("anatomy_image", "sample", anatomy_image_leaf)
register_leaves("anatomy_text", "sample", anatomy_text_leaf)
register_leaves("anatomy_temperature", "param", anatomy_temperature_param)
register_objective(Objective(
    "fvlm", leaves=("anatomy_image", "anatomy_text", "anatomy_temperature"), batch_fields=(FIELD,), loss=_fvlm,
    log_keys=log_keys(("lung", "heart", "esophagus", "aorta")),
    description="fVLM anatomy-level contrast with false-negative-calibrated soft targets (anatomy head)"))
