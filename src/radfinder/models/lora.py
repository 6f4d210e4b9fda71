"""Low-rank adapters (LoRA) for the text tower's linear layers.

`LoRALinear` is an `nn.Linear` with two extra parameters next to `weight`: `lora_A` (r, in) and `lora_B` (out, r),
delta = (alpha / r) * B @ A. The keys therefore sit exactly where the official checkpoints have them.

Weight semantics (the point that matters for compatibility):
* In eval mode the delta is merged into `weight` (forward = x W^T); in train mode it is not (forward =
  x W0^T + s * (x A^T) B^T), mirroring the official behaviour.
* A state dict always stores the *effective* weight in `weight` (merged), like the official HF exports, whose
  `weight` already contains W0 + s*B*A. Loading such a state dict therefore means "weight is merged": the module
  uses it as is in eval and subtracts the delta when switched to training.
* Component files (SPECTRE's LoRA text checkpoint) instead store the base W0; load them with
  `load_lora_base_state_dict`, after which the effective weight is W0 + s*B*A.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, r: int, alpha: float, dropout: float = 0.0, bias=True,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if r <= 0:
            raise ValueError(f"LoRA rank must be positive, got {r}")
        self.r, self.alpha = int(r), float(alpha)
        self.scaling = self.alpha / self.r
        self.lora_A = nn.Parameter(torch.empty(self.r, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, self.r, device=device, dtype=dtype))
        if self.lora_A.device.type != "meta":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.weight.requires_grad_(False)
        # B = 0 at creation, so the delta is zero and `weight` is both W0 and the effective weight; the flag only
        # has to agree with the mode (unmerged while training, so the adapters receive gradients).
        self.merged = not self.training
        self._skip_after_load = False
        self._register_load_state_dict_pre_hook(self._before_load)
        self.register_load_state_dict_post_hook(LoRALinear._after_load)

    @classmethod
    def from_linear(cls, linear: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> LoRALinear:
        new = cls(linear.in_features, linear.out_features, r, alpha, dropout, bias=linear.bias is not None,
                  device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            if linear.weight.device.type != "meta":
                new.weight.copy_(linear.weight)
                if linear.bias is not None:
                    new.bias.copy_(linear.bias)
        new.train(linear.training)
        return new

    def delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.weight.add_(self.delta().to(self.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight.sub_(self.delta().to(self.weight.dtype))
            self.merged = False

    def train(self, mode: bool = True):
        super().train(mode)
        if self.weight.device.type != "meta":
            self.unmerge() if mode else self.merge()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if not self.merged:
            out = out + F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B) * self.scaling
        return out

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if not self.merged:  # always export the effective weight (see module docstring)
            destination[prefix + "weight"] = (self.weight + self.delta()).detach()

    def _before_load(self, *args, **kwargs):
        # Loading overwrites weight with an effective (merged) weight; forget our own merge state first.
        self.merged = True

    @staticmethod
    def _after_load(module: LoRALinear, incompatible_keys) -> None:
        if module.training and not module._skip_after_load and module.weight.device.type != "meta":
            module.unmerge()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, alpha={self.alpha}"


def add_lora(model: nn.Module, targets: Iterable[str], r: int, alpha: float, dropout: float = 0.0) -> list[str]:
    """Replace every nn.Linear whose attribute name is in `targets` (e.g. q_proj, k_proj, v_proj, o_proj) by a
    LoRALinear with the same weights. Returns the qualified names replaced."""
    targets = set(targets)
    replaced = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear) and not isinstance(child, LoRALinear):
                setattr(parent, name, LoRALinear.from_linear(child, r, alpha, dropout))
                replaced.append(f"{parent_name}.{name}" if parent_name else name)
    if not replaced:
        raise ValueError(f"no linear layer named any of {sorted(targets)} found for LoRA")
    return replaced


def lora_modules(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for m in lora_modules(model) for p in (m.lora_A, m.lora_B)]


@torch.no_grad()
def load_lora_base_state_dict(model: nn.Module, state_dict, strict: bool = True):
    """Load a state dict whose `weight`s are the *base* W0 (component-file semantics): effective W = W0 + s*B@A."""
    modules = lora_modules(model)
    for m in modules:
        m._skip_after_load = True
    try:
        result = model.load_state_dict(state_dict, strict=strict)
    finally:
        for m in modules:
            m._skip_after_load = False
    for m in modules:
        m.merged = False  # weight is W0, the delta is not in it
        if not m.training:
            m.merge()
    return result
