"""Training objectives and the embedding leaves they consume, as registries (the extension contract).

The training step (`radfinder.train.step`) knows no objective by name: it asks this registry which objectives have a
non-zero weight (`losses.weights` in the config, a mapping name -> weight), which leaves they need, and then

1. phase 1 (no graph): produces every needed leaf of every micro-batch (and each step-level leaf once);
2. concatenates the per-sample leaves over the micro-batches, makes them (and the step and parameter leaves)
   autograd leaves, calls each objective's `loss` and back-propagates the weighted sum of the results to the leaves;
3. phase 2: re-produces each micro-batch's leaves with a graph inside `StepModule.forward` (DDP-wrapped) and
   back-propagates <leaf, cached gradient>, plus each objective's `live` term for that micro-batch.

Contract for a new method (fVLM, SCALE-VLP, ...):

* **Leaf producer** `register_leaves(names, scope, fn)`; `names` are produced together by one call (one forward):
  - scope "sample": `fn(step_module, mb) -> tuple[Tensor, ...]`, one tensor (B, ...) per name, B = len(mb) (e.g.
    `image` and `disease` (B, D) from one global pass; `text` (B, D); an anatomy head's (B, A, D));
  - scope "step": `fn(step_module, step_inputs) -> tuple[Tensor, ...]`, computed once per step from the
    step-level inputs (`step_inputs`: a dict the trainer builds, e.g. `prompt_tokens`, `prompt_shape`); its gradient
    is fed back in the last micro-batch's forward (e.g. `prompts` (Q, V, 2, D));
  - scope "param": `fn(model) -> tuple[Parameter, ...]`; the objective receives a detached copy in the loss dtype
    and the parameter's gradient is fed back as <param, grad> in the last forward (e.g. SigLIP's `t`, `b`).
  `step_module` has `.model`, `.autocast()` (a context manager) and `.loss_dtype`; producers run their forward
  under `step_module.autocast()` and return tensors cast to `step_module.loss_dtype`. Producers must be
  deterministic given the RNG state (the step restores each micro-batch's recorded state before re-producing).
  Groups are produced in registration order.
* **Objective** `register_objective(Objective(...))`:
  - `leaves`: the leaf names it reads (`ctx.leaves[name]`: per-sample leaves concatenated over this rank's
    micro-batches, requiring grad);
  - `batch_fields`: micro-batch fields it reads beyond the core ones (`labels`, `prompt_variant`, snippets,
    texts, features); each needs a provider registered with `radfinder.train.fields.register_batch_field`, and
    its value is in `mb.extras[name]` (tensors are moved to the device with the batch; `ctx.batch_field(name)`
    concatenates them over the micro-batches);
  - `count(micro_batches) -> float` (optional): this rank's number of supervised units (labelled pairs, snippets);
    the step sums it over ranks (`ctx.count_local`, `ctx.count_global`);
  - `loss(ctx) -> StepTerm | None` (optional): the step-level term. `StepTerm.loss` is this rank's share, scaled so
    that the shares of all ranks sum to the loss of one process on the concatenated global batch (SigLIP: the
    distributed form's share; a mean over supervised units: local sum / `ctx.count_global`). The step multiplies
    it by weight x world size (DDP averages gradients), so the reduced gradient is the single-process one.
    `StepTerm.value` is the global loss for the log when the objective knows it (else `value_sum`, this rank's
    part, is summed over ranks by the step and divided by the global count when the objective has `count`);
    `StepTerm.logs` adds further log keys (global values, e.g. per-anatomy terms; list them in `log_keys`);
  - `live(step_module, mb, settings) -> Tensor | None` (optional): a per-micro-batch term that needs only that
    micro-batch (localization: a scan's own depth cells), returned as a SUM over its units; the step scales it by
    weight x world / global count and logs the global sum / count. It runs inside the DDP-wrapped forward;
  - `log_keys`: the keys it adds to each `log.jsonl` line (default: its name, holding its unweighted value); the
    loss-curve plot (`radfinder.train.plots.plot_log`) draws one panel per key found in the log.
  Leaves hold this rank's rows only: an objective whose loss couples samples (contrast, soft targets) reaches the
  other ranks itself, through a distributed loss form (`siglip_loss_distributed`, `soft_contrastive_loss`,
  `fvlm_loss`'s) or `radfinder.losses.collectives` (`swca` gathers the global labels for its targets), and every
  rank must run the same collectives in the same order.
* Objective-specific settings (sigma, tau, prompt mode, ...) are read from `ctx.settings` (`LossSettings`; new
  objectives put theirs in `LossSettings.options[name]`, filled from `losses.options.<name>` of the config).

Register at import time in the module that defines the piece and import that module from its package `__init__`
(`losses/__init__.py` imports `objectives`), so that a config naming it validates. Names of the built-in
objectives and leaves: `radfinder.losses.objectives`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..errors import ConfigError
from ..text.findings import CTRATE_FINDINGS

Scope = Literal["sample", "step", "param"]


@dataclass(frozen=True)
class LeafGroup:
    names: tuple[str, ...]
    scope: Scope
    fn: Callable[..., tuple[torch.Tensor, ...]]


@dataclass
class LossSettings:
    """Objective settings of one run (the trainer fills it from `losses` of the config)."""

    weights: Any  # LossWeights (a mapping name -> weight)
    sigma: float = 1.0
    tau: float = 0.1
    prompt_mode: str = "random_1"
    pos_weight: torch.Tensor | None = None  # (Q,)
    question_weight: torch.Tensor | None = None  # (Q,)
    siglip_chunk: int | None = None
    label_names: tuple[str, ...] = CTRATE_FINDINGS  # the label vocabulary's findings, in label-vector order
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-objective settings, by name

    def option(self, objective: str, key: str, default: Any = None) -> Any:
        return self.options.get(objective, {}).get(key, default)


@dataclass
class StepTerm:
    """What an objective's step-level `loss` returns (see module doc)."""

    loss: torch.Tensor | None  # this rank's share of the global-batch loss (differentiable in the leaves)
    value: float | None = None  # the global loss for the log, when known (e.g. SigLIP's loss_global)
    value_sum: float | None = None  # else: this rank's part of count_global x the loss, summed over ranks
    logs: dict[str, float] = field(default_factory=dict)  # further log keys (global values, same on every rank)


@dataclass
class ObjectiveContext:
    leaves: dict[str, torch.Tensor]  # per-sample leaves concatenated over this rank's micro-batches, + step/param
    micro_batches: Sequence[Any]
    settings: LossSettings
    world: int
    count_local: float = 0.0
    count_global: float = 0.0

    def batch_field(self, name: str) -> Any:
        """An extras field over this rank's micro-batches: tensors concatenated on dim 0, lists chained."""
        vals = [mb.extras[name] for mb in self.micro_batches]
        if vals and isinstance(vals[0], torch.Tensor):
            return torch.cat(vals)
        return [v for vs in vals for v in vs]


@dataclass(frozen=True)
class Objective:
    name: str
    leaves: tuple[str, ...] = ()
    batch_fields: tuple[str, ...] = ()
    loss: Callable[[ObjectiveContext], StepTerm | None] | None = None
    live: Callable[[Any, Any, LossSettings], torch.Tensor | None] | None = None
    count: Callable[[Sequence[Any]], float] | None = None
    log_keys: tuple[str, ...] = ()
    description: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        return self.log_keys or (self.name,)


_OBJECTIVES: dict[str, Objective] = {}
_LEAVES: list[LeafGroup] = []


def register_objective(obj: Objective, *, replace: bool = False) -> Objective:
    if obj.name in _OBJECTIVES and not replace:
        raise ValueError(f"objective {obj.name!r} is already registered")
    if obj.loss is None and obj.live is None:
        raise ValueError(f"objective {obj.name!r} needs a step-level `loss`, a `live` term, or both")
    if obj.live is not None and obj.count is None:
        raise ValueError(f"objective {obj.name!r}: a live term needs `count` (its mean is over the global count)")
    _OBJECTIVES[obj.name] = obj
    return obj


def register_leaves(names: Sequence[str] | str, scope: Scope, fn: Callable[..., tuple[torch.Tensor, ...]],
                    *, replace: bool = False) -> LeafGroup:
    names = (names,) if isinstance(names, str) else tuple(names)
    if scope not in ("sample", "step", "param"):
        raise ValueError(f"leaf scope must be sample, step or param, got {scope!r}")
    taken = {n for g in _LEAVES for n in g.names}
    clash = [n for n in names if n in taken]
    if clash and not replace:
        raise ValueError(f"leaves {clash} are already registered")
    if clash:
        _LEAVES[:] = [g for g in _LEAVES if not set(g.names) & set(names)]
    group = LeafGroup(names, scope, fn)
    _LEAVES.append(group)
    return group


def objective_names() -> list[str]:
    """Registered objectives, in registration order (the order the step sums and logs them)."""
    return list(_OBJECTIVES)


def get_objective(name: str) -> Objective:
    try:
        return _OBJECTIVES[name]
    except KeyError:
        raise ConfigError(f"unknown objective {name!r}; registered objectives: {', '.join(_OBJECTIVES)}") from None


def check_objective_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in _OBJECTIVES]
    if unknown:
        raise ConfigError(f"unknown objective(s) {unknown} in losses.weights; registered objectives: "
                          f"{', '.join(_OBJECTIVES)}")


def active_objectives(weights: Any) -> list[Objective]:
    """Objectives with a non-zero weight, in registration order."""
    mapping = dict(weights.items()) if hasattr(weights, "items") else dict(weights)
    check_objective_names(list(mapping))
    return [o for n, o in _OBJECTIVES.items() if mapping.get(n, 0.0) > 0]


def leaf_groups(needed: set[str] | None = None, scope: Scope | None = None) -> list[LeafGroup]:
    """Producer groups (registration order) that make at least one of `needed` (all when None)."""
    return [g for g in _LEAVES if (scope is None or g.scope == scope)
            and (needed is None or set(g.names) & needed)]


def needed_leaves(objectives: Sequence[Objective]) -> set[str]:
    need = {leaf for o in objectives for leaf in o.leaves}
    known = {n for g in _LEAVES for n in g.names}
    missing = sorted(need - known)
    if missing:
        raise ConfigError(f"no producer registered for leaves {missing} (needed by "
                          f"{[o.name for o in objectives if set(o.leaves) & set(missing)]})")
    return need


def needed_batch_fields(objectives: Sequence[Objective]) -> list[str]:
    return list(dict.fromkeys(f for o in objectives for f in o.batch_fields))
