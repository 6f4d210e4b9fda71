"""Weighted sum of the training objectives, with each term kept for logging.

Why the default weights are 1 / 1 / 8 (method notes 1.5, "effective relative weighting"): the official trainer does
not weight the three losses once per step. Per optimizer step of 4096 scans it back-propagates
* the SigLIP loss once in total (its per-micro-batch pieces add up to one big-batch gradient),
* the localization loss in each of the 256 micro-batches with weight 0.004 -> 256 * 0.004 = ~1.0 x its mean,
* the prompt loss in each of the 16 mega-batches of 256 scans with weight 0.5 -> 16 * 0.5 = 8 x its mean.
Computing each loss once on a big batch therefore needs weights 1, ~1 and 8 to keep the paper's balance.
`LossWeights.from_official_schedule` redoes that arithmetic for other batch layouts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from pydantic import ConfigDict, RootModel, model_validator

from ._validate import LossInputError
from .registry import objective_names

RADFINDER_WEIGHTS: dict[str, float] = {"siglip": 1.0, "localization": 1.0, "prompt": 8.0}


class LossWeights(RootModel[dict[str, float]]):
    """Objective weights by name (`losses.weights` of a config), checked against the objective registry
    (`radfinder.losses.registry`). An objective not listed has weight 0. `LossWeights()` is RadFinder's preset
    {siglip: 1, localization: 1, prompt: 8} (L = siglip * L_glob + localization * L_loc + prompt * L_pr);
    `LossWeights(siglip=1, fvlm=1)` or `LossWeights({"swca": 1, "prompt": 8})` list others. Attribute access
    (`w.prompt`) reads a registered objective's weight (0 when not listed)."""

    model_config = ConfigDict(frozen=True)

    def __init__(self, root: Mapping[str, float] | None = None, **weights: float):
        if root is not None and weights:
            raise TypeError("give the weights as one mapping or as keywords, not both")
        if root is None:
            root = weights if weights else dict(RADFINDER_WEIGHTS)
        super().__init__(root=dict(root))

    @model_validator(mode="after")
    def _check(self) -> LossWeights:
        known = objective_names()
        unknown = [k for k in self.root if k not in known]
        if unknown:
            raise ValueError(f"unknown objective(s) {unknown} in the loss weights; registered objectives: "
                             f"{', '.join(known)}")
        bad = {k: v for k, v in self.root.items() if not (v >= 0.0 and math.isfinite(v))}
        if bad:
            raise ValueError(f"loss weights must be finite and >= 0, got {bad}")
        return self

    def __getattr__(self, name: str):
        if not name.startswith("_") and name in objective_names():
            return float(self.root.get(name, 0.0))
        return super().__getattr__(name)

    def get(self, name: str, default: float = 0.0) -> float:
        return float(self.root.get(name, default))

    def items(self):
        return self.root.items()

    def active(self) -> list[str]:
        """Names with a non-zero weight, in registration order."""
        return [n for n in objective_names() if self.root.get(n, 0.0) > 0]

    @classmethod
    def from_official_schedule(
        cls,
        step_batch: int = 4096,
        micro_batch: int = 16,
        localization_weight: float = 0.004,
        prompt_batch: int = 256,
        prompt_weight: float = 0.5,
    ) -> LossWeights:
        """Effective big-batch weights of the official per-micro-batch schedule (module doc).

        The localization factor assumes every micro-batch has snippets; when only some do (only RefCT has
        snippets), scale it by that fraction.
        """
        if min(step_batch, micro_batch, prompt_batch) < 1:
            raise LossInputError("batch sizes must be >= 1")
        return cls(
            siglip=1.0,
            localization=localization_weight * step_batch / micro_batch,
            prompt=prompt_weight * step_batch / prompt_batch,
        )


@dataclass
class CombinedLoss:
    """`total` is differentiable; `terms` holds each unweighted objective (detached) and `weighted` its share."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    weighted: dict[str, torch.Tensor] = field(default_factory=dict)

    def log_dict(self, prefix: str = "loss/") -> dict[str, float]:
        out = {f"{prefix}total": float(self.total.detach())}
        out.update({f"{prefix}{k}": float(v) for k, v in self.terms.items()})
        out.update({f"{prefix}{k}_weighted": float(v) for k, v in self.weighted.items()})
        return out


TERMS = ("siglip", "localization", "prompt")


def _scalar(name: str, value) -> torch.Tensor:
    loss = getattr(value, "loss", value)  # accepts SiglipOutput
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise LossInputError(f"loss term {name!r} must be a scalar tensor (or have a .loss), got {type(value)}")
    return loss.reshape(())


def combine_losses(terms: Mapping[str, object], weights: LossWeights | None = None) -> CombinedLoss:
    """Weighted sum of `terms` (names: siglip, localization, prompt; a value may be None when a batch has none of
    that supervision, e.g. no snippets). Terms with weight 0 are logged but not added, so they cost no backward."""
    weights = weights or LossWeights()
    names = [*TERMS, *(n for n in objective_names() if n not in TERMS)]
    unknown = sorted(set(terms) - set(names))
    if unknown:
        raise LossInputError(f"unknown loss term(s) {unknown}; expected a subset of {names}")
    total: torch.Tensor | None = None
    out = CombinedLoss(total=torch.zeros(()))
    for name in names:
        value = terms.get(name)
        if value is None:
            continue
        loss = _scalar(name, value)
        w = float(getattr(weights, name))
        out.terms[name] = loss.detach()
        out.weighted[name] = loss.detach() * w
        if w != 0.0:
            total = loss * w if total is None else total + loss * w
    if total is None:
        raise LossInputError("no loss term with a non-zero weight was given; nothing to optimise")
    out.total = total
    return out
