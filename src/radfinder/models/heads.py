"""Projection heads and the learnable SigLIP scale/bias."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class ProjectionHead(nn.Module):
    """Linear -> GELU -> Linear -> GELU -> Linear (bottleneck) -> weight-normalised Linear without bias.

    The weight-norm magnitude g (`last_layer.parametrizations.weight.original0`) starts at 1 and is frozen, so the
    output scale is fixed and only directions are learnt; checkpoints may still carry g != 1, and it is used.
    Outputs are not normalised.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for m in self.layers:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)
        self.last_layer.parametrizations.weight.original0.requires_grad_(False)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def effective_weight(self) -> torch.Tensor:
        return self.last_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.layers(x))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Files written with the legacy torch.nn.utils.weight_norm API store weight_g / weight_v.
        for old, new in (("weight_g", "original0"), ("weight_v", "original1")):
            old_key = f"{prefix}last_layer.{old}"
            if old_key in state_dict:
                state_dict[f"{prefix}last_layer.parametrizations.weight.{new}"] = state_dict.pop(old_key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class SigLIPScale(nn.Module):
    """Learnable log logit scale `t` (init ln 10) and logit bias `b` (init -10); logits = cos * exp(t) + b."""

    def __init__(self, t_init: float = math.log(10.0), b_init: float = -10.0):
        super().__init__()
        self.t = nn.Parameter(torch.tensor(float(t_init)))
        self.b = nn.Parameter(torch.tensor(float(b_init)))

    @property
    def scale(self) -> torch.Tensor:
        return self.t.exp()

    def logits(self, cos: torch.Tensor) -> torch.Tensor:
        return cos * self.t.exp() + self.b
