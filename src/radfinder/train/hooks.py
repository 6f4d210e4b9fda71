"""Evaluation hooks: callables run every N steps on rank 0, returning named scalars for the logs.

A hook is any callable `hook(ctx: EvalContext) -> dict[str, float]`. The built-in held-out retrieval hook lives
in `radfinder.eval.hooks` (evaluation sits above training); `hooks_for(cfg)` there builds what a config asks for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..models.lora import lora_modules


@dataclass
class EvalContext:
    model: nn.Module  # the unwrapped RadFinderModel, in eval mode while the hook runs
    step: int  # optimizer steps completed
    epoch: float
    device: torch.device
    out_dir: Path


EvalHook = Callable[[EvalContext], dict[str, float]]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """model.eval() for the duration, restoring train mode exactly.

    eval() merges LoRA deltas into the weights and train() subtracts them again, which is not bit-exact in floating
    point; the exact base weights are put back so an evaluation never perturbs the training trajectory.
    """
    was_training = model.training
    saved = [(m, m.weight.detach().clone(), m.merged) for m in lora_modules(model)]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
        with torch.no_grad():
            for m, w, merged in saved:
                m.weight.copy_(w)
                m.merged = merged
