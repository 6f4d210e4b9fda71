"""3D axial rotary position embedding (RoPE) shared by the window encoder and the feature combiner.

Every head vector of length h is split as [h-block | w-block | d-block] x 2 (the three axis blocks, then the same
angles again: the rotate-half pairing p <-> p + h/2). Coordinates are voxel-centre positions scaled to [-1, 1] by
per-axis divisors; the divisor differs from the grid size only in the "physical" depth mode of the combiner, where
8 depth tokens per window share the window count as divisor so that a token keeps its physical meaning whatever
the number of windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

Grid = tuple[int, int, int]


def rope_periods(head_dim: int, base: float) -> torch.Tensor:
    """`base ** (m / n)` for m < n = head_dim / 6, in float32 (float32 pow, which is what the official buffer holds)."""
    if head_dim % 6:
        raise ValueError(f"3D RoPE needs a head dimension divisible by 6, got {head_dim}")
    n = head_dim // 6
    return torch.tensor(base, dtype=torch.float32) ** (torch.arange(n, dtype=torch.float32) * 2 / (head_dim // 3))


def rope_coords(grid: Sequence[int], divisors: Sequence[float] | None = None, device=None) -> torch.Tensor:
    """(H*W*D, 3) float32 token coordinates, H slowest; `2 * (i + 0.5) / div - 1` per axis."""
    divisors = tuple(grid) if divisors is None else tuple(divisors)
    axes = [
        2 * (torch.arange(0.5, n, dtype=torch.float32, device=device) / div) - 1
        for n, div in zip(grid, divisors, strict=True)
    ]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def rope_sin_cos(
    grid: Sequence[int], periods: torch.Tensor, divisors: Sequence[float] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """sin and cos tables (H*W*D, 6n) for one grid. The order of operations (coords * 2pi, then / periods) is kept
    because the tables are compared bit for bit against the reference."""
    coords = rope_coords(grid, divisors, device=periods.device)
    angles = (coords[:, :, None] * (2 * math.pi)) / periods.float()  # (N, 3, n)
    angles = angles.reshape(coords.shape[0], -1)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.sin(), angles.cos()


def batched_rope_sin_cos(
    grids: Sequence[Grid],
    padded_grid: Grid,
    periods: torch.Tensor,
    divisors: Sequence[Sequence[float]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-scan tables scattered into the padded grid: (B, Hm*Wm*Dm, 6n), zero (sin = cos = 0) outside each scan.

    Zero tables zero q and k at padded positions; those are masked as keys anyway, and it keeps padded positions
    deterministic (the reference produced them this way too).
    """
    hm, wm, dm = padded_grid
    width = periods.numel() * 6
    sin = periods.new_zeros(len(grids), hm, wm, dm, width)
    cos = periods.new_zeros(len(grids), hm, wm, dm, width)
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
    for b, grid in enumerate(grids):
        h, w, d = (int(v) for v in grid)
        div = None if divisors is None else tuple(float(v) for v in divisors[b])
        key = (h, w, d, div)
        if key not in cache:
            cache[key] = rope_sin_cos((h, w, d), periods, div)
        s, c = cache[key]
        sin[b, :h, :w, :d] = s.view(h, w, d, width)
        cos[b, :h, :w, :d] = c.view(h, w, d, width)
    return sin.view(len(grids), -1, width), cos.view(len(grids), -1, width)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on x (B, heads, N, h) with tables (N, h) or (B, N, h)."""
    if sin.dim() == 3:
        sin, cos = sin[:, None], cos[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class Rope3D(nn.Module):
    """Holds the `periods` buffer (stored in official checkpoints as `<module>.rope.periods`)."""

    def __init__(self, head_dim: int, base: float):
        super().__init__()
        self.head_dim = head_dim
        self.base = float(base)
        self.register_buffer("periods", rope_periods(head_dim, base), persistent=True)

    def reset_parameters(self) -> None:
        """Recompute the buffer (needed after materialising a model built on the meta device)."""
        with torch.no_grad():
            self.periods.copy_(rope_periods(self.head_dim, self.base).to(self.periods.device))

    def _periods(self) -> torch.Tensor:
        # model.to(bfloat16) also casts this buffer; angles must come from the float32 values, so recompute then.
        if self.periods.dtype == torch.float32:
            return self.periods
        return rope_periods(self.head_dim, self.base).to(self.periods.device)

    def tables(self, grid: Sequence[int], divisors: Sequence[float] | None = None):
        return rope_sin_cos(grid, self._periods(), divisors)

    def batched_tables(self, grids, padded_grid, divisors=None):
        return batched_rope_sin_cos(grids, padded_grid, self._periods(), divisors)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}"
