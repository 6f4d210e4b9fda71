"""One optimizer step's gradient: the registered objectives, cached re-forwarding, and data parallelism.

Per step (method notes 1.5; the pattern of `train/gradcache.py`, extended to every objective). The objectives with
a non-zero weight and the leaves they need come from the registry (`radfinder.losses.registry`, whose docstring is
the extension contract; RadFinder's siglip / prompt / localization live in `radfinder.losses.objectives`):

1. Phase 1, no graph: produce every needed per-sample leaf of every micro-batch (global image embedding, disease
   embedding, report embedding, ...) and every step-level leaf once (the prompt bank), recording the RNG state
   before each.
2. Step-level losses on the cached leaves: each objective's `loss` on the leaves concatenated over the micro-batches
   (SigLIP's negatives span every micro-batch and, through its distributed form, every rank). Parameter leaves
   (SigLIP's t, b) enter as leaf copies too. Backward gives d objective / d every cached leaf.
3. Phase 2: each micro-batch's leaves are re-produced with a graph under its recorded RNG state, and the surrogate
   <leaf, cached gradient> is back-propagated, plus the objectives' live terms (localization needs only its own
   scan's depth cells, so it runs live here). The last micro-batch also re-produces the step leaves and carries
   the parameter-leaf surrogates, so every parameter's gradient arrives inside a forward of the (DDP-wrapped)
   `StepModule`.

Why everything goes through `StepModule.forward`: DistributedDataParallel reduces a parameter's gradient only from
hooks armed by its own forward. Gradients created outside it (a loss on cached leaves touching `criterion.t`) would
silently stay unsynchronised. Here no parameter gradient is created outside, the first K-1 micro-batches run under
`no_sync`, and the last forward touches every trainable parameter (a zero-weighted term for those it does not use)
so one all-reduce per step carries the whole accumulated gradient.

Scaling: each rank's objective is world_size x its share of the global-batch loss (shares sum to the loss of one
process on the concatenated batch; DDP averages gradients over ranks), so the reduced gradient equals the
single-process gradient on the whole global batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..losses.collectives import dist_active
from ..losses.objectives import pad_depth, select_for_batch
from ..losses.registry import (
    LossSettings,
    Objective,
    ObjectiveContext,
    active_objectives,
    leaf_groups,
    needed_leaves,
)
from .batches import MicroBatch
from .gradcache import GradCacheError, RngState

__all__ = ["LossSettings", "StepModule", "StepStats", "compute_step_gradients", "pad_depth"]
_select = select_for_batch  # the old private name


@dataclass
class StepStats:
    loss: float
    n_samples: int  # global
    n_snippets: int  # global
    n_labelled: int  # global labelled (sample, finding) pairs
    negatives: int  # negatives per image in a batch-wide contrast
    terms: dict[str, float | None] = field(default_factory=dict)  # each active objective's unweighted value
    extras: dict[str, float] = field(default_factory=dict)  # objectives' further log keys (StepTerm.logs)

    def __getattr__(self, name: str):  # stats.siglip, stats.prompt, ...: an objective's value (None if inactive)
        if name.startswith("__") or name == "terms":
            raise AttributeError(name)
        return self.__dict__.get("terms", {}).get(name)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("terms", "extras")}
        return {**out, **self.terms, **self.extras}


def _sum_all(values: list[float], device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist_active():
        dist.all_reduce(t)
    return t.tolist()


def _touch(params: list[nn.Parameter]) -> torch.Tensor:
    return torch.stack([p.reshape(-1)[:1].sum() for p in params]).sum() * 0.0


class StepModule(nn.Module):
    """Forward = one micro-batch's surrogate objective (see module doc); wrapped by DDP when distributed."""

    def __init__(self, model: nn.Module, autocast_dtype: torch.dtype | None):
        super().__init__()
        self.model = model
        self.autocast_dtype = autocast_dtype
        # losses run in float32 (float64 when the whole model is, for exactness tests), whatever autocast does
        self.loss_dtype = torch.float64 if model.criterion.t.dtype == torch.float64 else torch.float32

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    def sample_leaves(self, mb: MicroBatch, needed: set[str]) -> dict[str, torch.Tensor]:
        """The needed per-sample leaves of a micro-batch, producer groups in registration order."""
        out: dict[str, torch.Tensor] = {}
        for g in leaf_groups(needed, "sample"):
            out.update(zip(g.names, g.fn(self, mb), strict=True))
        return out

    def forward(self, mb, grads, live, settings, final=None, cached=None):
        """grads: leaf name -> cached gradient of this micro-batch's rows; live: [(objective, scale)];
        final (last micro-batch): step and parameter leaves' gradients; cached: phase-1 leaves (verify)."""
        leaves = self.sample_leaves(mb, set(grads))
        if cached is not None:
            _check_same([cached[n] for n in grads], [leaves[n] for n in grads])
        surrogate = None
        for name, g in grads.items():
            term = (leaves[name] * g).sum()
            surrogate = term if surrogate is None else surrogate + term
        if surrogate is None:
            surrogate = self.model.criterion.t.new_zeros(()).to(self.loss_dtype)
        sums = {}
        for obj, scale in live:
            s = obj.live(self, mb, settings)
            if s is not None:
                surrogate = surrogate + s * scale
                sums[obj.name] = s.detach()
        if final is not None:
            for group, rng, g_step in final["step"]:
                rng.restore()
                for leaf, g in zip(group.fn(self, final["inputs"]), g_step, strict=True):
                    surrogate = surrogate + (leaf * g).sum()
            for p, g in final["params"]:
                surrogate = surrogate + p * g
            surrogate = surrogate + _touch(final["trainable"])
        return surrogate, sums


def _check_same(cached, live, atol: float = 1e-4) -> None:
    diff = max((float((a - b.detach()).abs().max()) for a, b in zip(cached, live, strict=True)), default=0.0)
    if diff > atol:
        raise GradCacheError(f"embeddings differ by {diff:.3g} between the cached and the gradient pass")


def _grad_or_zero(x: torch.Tensor) -> torch.Tensor:
    return x.grad if x.grad is not None else torch.zeros_like(x)


def compute_step_gradients(
    step_module: StepModule,
    wrapped: nn.Module,
    micro_batches: list[MicroBatch],
    step_inputs: dict[str, Any],
    settings: LossSettings,
    trainable: list[nn.Parameter],
    verify: bool = False,
) -> StepStats:
    """Accumulate this rank's share of the step gradient into `.grad` (zero them before). See module doc.

    `step_inputs`: what step-level leaf producers read (the trainer passes `prompt_tokens` and `prompt_shape`)."""
    model = step_module.model
    world = dist.get_world_size() if dist_active() else 1
    device = model.criterion.t.device
    w = settings.weights
    objectives: list[Objective] = active_objectives(w)
    needed = needed_leaves(objectives)
    sample_names = [n for g in leaf_groups(needed, "sample") for n in g.names]
    step_groups = leaf_groups(needed, "step")
    param_groups = leaf_groups(needed, "param")

    # phase 1
    states: list[RngState] = []
    cached: list[dict[str, torch.Tensor]] = []
    step_vals = []
    with torch.no_grad():
        for mb in micro_batches:
            states.append(RngState())
            cached.append(step_module.sample_leaves(mb, needed))
        for g in step_groups:
            rng = RngState()
            step_vals.append((g, rng, g.fn(step_module, step_inputs)))
    after_phase1 = RngState()

    # step-level losses on leaves
    sizes = [len(mb) for mb in micro_batches]
    leaves: dict[str, torch.Tensor] = {}
    for n in sample_names:
        leaves[n] = torch.cat([c[n] for c in cached]).requires_grad_(True)
    for g, _, vals in step_vals:
        for n, v in zip(g.names, vals, strict=True):
            leaves[n] = v.detach().requires_grad_(True)
    params: list[tuple[torch.Tensor, torch.Tensor]] = []  # (parameter, its leaf copy)
    for g in param_groups:
        for n, p in zip(g.names, g.fn(model), strict=True):
            leaves[n] = p.detach().to(step_module.loss_dtype).requires_grad_(True)
            params.append((p, leaves[n]))

    n_lab_local = sum(int((mb.labels != -1).sum()) for mb in micro_batches)
    n_snip_local = sum(mb.n_snippets for mb in micro_batches)
    counted = [o for o in objectives if o.count is not None]
    counts_local = [float(o.count(micro_batches)) for o in counted]
    reduced = _sum_all([n_lab_local, n_snip_local, *counts_local], device)
    n_lab_global, n_snip_global = int(reduced[0]), int(reduced[1])
    counts = {o.name: (cl, cg) for o, cl, cg in zip(counted, counts_local, reduced[2:], strict=True)}

    objective = next(iter(leaves.values())).new_zeros(()) if leaves else torch.zeros((), device=device)
    values: dict[str, float | None] = {}
    value_sums: dict[str, float] = {}
    extras: dict[str, float] = {}
    for o in objectives:
        if o.loss is None:
            continue
        cl, cg = counts.get(o.name, (0.0, 0.0))
        ctx = ObjectiveContext(leaves, micro_batches, settings, world, cl, cg)
        term = o.loss(ctx)
        if term is None:
            continue
        if term.loss is not None:
            objective = objective + term.loss * (w.get(o.name) * world)
        extras.update(term.logs)
        if term.value is not None:
            values[o.name] = term.value
        elif term.value_sum is not None:
            value_sums[o.name] = term.value_sum
    if objective.requires_grad:
        objective.backward()

    grads = {n: _grad_or_zero(leaves[n]).split(sizes) for n in sample_names}
    live = []
    for o in objectives:
        if o.live is not None and counts[o.name][1]:
            live.append((o, w.get(o.name) * world / counts[o.name][1]))
    final = {
        "step": [(g, rng, tuple(_grad_or_zero(leaves[n]) for n in g.names)) for g, rng, _ in step_vals],
        "inputs": step_inputs,
        "params": [(p, _grad_or_zero(leaf).to(p.dtype)) for p, leaf in params],
        "trainable": trainable,
    }

    # phase 2
    live_sums = {o.name: 0.0 for o, _ in live}
    last = len(micro_batches) - 1
    no_sync = getattr(wrapped, "no_sync", None)
    for k, mb in enumerate(micro_batches):
        ctx = no_sync() if (no_sync is not None and k < last) else contextlib.nullcontext()
        with ctx:
            states[k].restore()
            surrogate, sums = wrapped(mb, {n: grads[n][k] for n in sample_names}, live, settings,
                                      final if k == last else None, cached[k] if verify else None)
            if surrogate.requires_grad:  # e.g. a live-only objective on a micro-batch without its data
                surrogate.backward()
            for name, s in sums.items():
                live_sums[name] += float(s)
    after_phase1.restore()

    # logged values: one all-reduce of every per-rank sum, in registration order
    for o in objectives:
        if o.name in live_sums and o.name not in value_sums:
            value_sums[o.name] = live_sums[o.name]
    order = [o.name for o in objectives if o.name in value_sums]
    summed = dict(zip(order, _sum_all([value_sums[n] for n in order], device), strict=True)) if order else {}
    for o in objectives:
        if o.name in values:
            continue
        cg = counts[o.name][1] if o.name in counts else None
        if o.name in summed and cg is None:
            values[o.name] = summed[o.name]
        elif cg:
            values[o.name] = summed.get(o.name, 0.0) / cg
        else:
            values[o.name] = None
    terms = {o.name: values.get(o.name) for o in objectives}
    total = sum(w.get(name) * v for name, v in terms.items() if v is not None)
    n_global = int(_sum_all([float(sum(sizes))], device)[0])
    return StepStats(loss=float(total), n_samples=n_global, n_snippets=n_snip_global, n_labelled=n_lab_global,
                     negatives=n_global - 1, terms=terms, extras=extras)
