"""Trainable-parameter selection, AdamW parameter groups, and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from ..models.lora import lora_parameters
from ..models.text_topk import top_layer_parameters, top_layers
from .config import OptimSection


def select_trainable(model: nn.Module, text_train: str) -> list[str]:
    """Set requires_grad per the training recipe; returns the trainable parameter names.

    The window encoder is frozen (it produced the feature cache); the weight-norm magnitudes of the projection
    heads stay frozen as built. The text tower trains fully, only through LoRA, only in its top k layers
    (`top<k>`), or not at all.
    """
    for p in model.backbone_image.parameters():
        p.requires_grad_(False)
    text = model.backbone_text
    if text_train == "all":
        for p in text.parameters():
            p.requires_grad_(True)
    elif text_train == "lora":
        lora = {id(p) for p in lora_parameters(text)}
        if not lora:
            raise ConfigError("model.text_train is 'lora' but the text tower has no LoRA adapters "
                              "(set text.lora in the model config, e.g. model.overrides.text.lora: {r: 16})")
        for p in text.parameters():
            p.requires_grad_(id(p) in lora)
    elif text_train == "frozen":
        for p in text.parameters():
            p.requires_grad_(False)
    elif top_layers(text_train) is not None:
        top = {id(p) for p in top_layer_parameters(text, top_layers(text_train))}
        for p in text.parameters():
            p.requires_grad_(id(p) in top)
    else:
        raise ConfigError(f"unknown model.text_train {text_train!r}")
    return [n for n, p in model.named_parameters() if p.requires_grad]


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norm weights, LayerScale gammas and the SigLIP t and b get no weight decay."""
    leaf = name.rsplit(".", 1)[-1]
    return (
        param.ndim <= 1
        or leaf == "bias"
        or "norm" in name.lower()
        or leaf == "gamma"
        or name in ("criterion.t", "criterion.b")
    )


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, plain, decay_names, plain_names = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if no_decay(name, p):
            plain.append(p)
            plain_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "names": decay_names})
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0, "names": plain_names})
    if not groups:
        raise ConfigError("nothing to train: every parameter is frozen")
    return groups


def build_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.AdamW:
    groups = param_groups(model, cfg.weight_decay)
    # foreach=False: the per-parameter loop gives the same float results whatever the parameter grouping, and
    # on CPU the fused/foreach kernels are not faster at these sizes
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, foreach=False)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Linear warm-up from base/warmup to base over `warmup_steps`, then cosine from base to min_lr.

    `step` is the 0-based index of the optimizer step about to be taken.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
