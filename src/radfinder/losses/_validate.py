"""Input checks shared by the losses: one clear error instead of a shape error deep inside an einsum."""

from __future__ import annotations

import torch

from ..errors import RadfinderError


class LossInputError(RadfinderError, ValueError):
    """A loss received inputs of the wrong shape, dtype or content."""


def check_shape(name: str, tensor: torch.Tensor, ndim: int, what: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise LossInputError(f"{name} must be a torch.Tensor {what}, got {type(tensor).__name__}")
    if tensor.ndim != ndim:
        raise LossInputError(f"{name} must be {what}, got shape {tuple(tensor.shape)}")


def as_scalar(name: str, value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A 0-d tensor in `like`'s dtype/device; keeps the autograd link when `value` is a learnable parameter."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise LossInputError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        return value.reshape(()).to(dtype=like.dtype, device=like.device)
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)
