"""Feature combiner: a small ViT over the per-window features of one scan (or a padded batch of scans).

It runs from window features alone, so training from a frozen-feature cache never touches the window encoder.
Two paths share the transformer:
* global ("low_res"): one token per window, input [cls, patch_average] -> `patch_proj`; output (cls_c, avg_c).
* depth (axis2): 8 depth tokens per window; the released variant projects axis2 with `axis_patch_proj` and uses
  "physical" RoPE depth coordinates; output cls_a and one per-depth-cell vector (in-plane masked mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .layers import LN_EPS, Block, init_vit_weights
from .rope import Rope3D

AxisInput = Literal["axisproj", "clsinput"]
RopeMode = Literal["physical", "regular"]


def grid_list(grid_size: torch.Tensor | Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """(B, 3) tensor / nested sequence -> list of (Hg, Wg, Dg) python ints."""
    if isinstance(grid_size, torch.Tensor):
        grid_size = grid_size.reshape(-1, 3).tolist()
    grids = [tuple(int(v) for v in g) for g in grid_size]
    if any(len(g) != 3 or min(g) < 1 for g in grids):
        raise ValueError(f"grid sizes must be positive (Hg, Wg, Dg) triples, got {grids}")
    return grids


def window_mask_from_grids(grids, padded: tuple[int, int, int] | None = None, device=None) -> torch.Tensor:
    grids = grid_list(grids)
    padded = padded or tuple(max(g[i] for g in grids) for i in range(3))
    mask = torch.zeros(len(grids), *padded, dtype=torch.bool, device=device)
    for b, (h, w, d) in enumerate(grids):
        mask[b, :h, :w, :d] = True
    return mask


def grids_from_mask(window_mask: torch.Tensor) -> list[tuple[int, int, int]]:
    """Per-scan (Hg, Wg, Dg) of a (B, Hm, Wm, Dm) window mask whose valid block starts at the origin."""
    m = window_mask.bool()
    return [
        (int(m[b].any(2).any(1).sum()), int(m[b].any(2).any(0).sum()), int(m[b].any(1).any(0).sum()))
        for b in range(m.shape[0])
    ]


def pad_feature_grids(grids: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack per-scan feature grids (Hg, Wg, Dg, *rest) into a zero-padded batch.

    Returns (padded (B, Hm, Wm, Dm, *rest), window_mask (B, Hm, Wm, Dm) bool, grid_size (B, 3) int64).
    """
    if not grids:
        raise ValueError("pad_feature_grids needs at least one scan")
    rest = tuple(grids[0].shape[3:])
    if any(tuple(g.shape[3:]) != rest for g in grids):
        raise ValueError("all feature grids must share their trailing (feature) dimensions")
    sizes = [tuple(g.shape[:3]) for g in grids]
    padded_grid = tuple(max(s[i] for s in sizes) for i in range(3))
    out = grids[0].new_zeros(len(grids), *padded_grid, *rest)
    for b, g in enumerate(grids):
        h, w, d = g.shape[:3]
        out[b, :h, :w, :d] = g
    mask = window_mask_from_grids(sizes, padded_grid, device=out.device)
    return out, mask, torch.tensor(sizes, dtype=torch.long)


def windows_to_grids(features: torch.Tensor, grid_size) -> list[torch.Tensor]:
    """Split per-window rows (N, *rest) of scans concatenated in batch order into grids (Hg, Wg, Dg, *rest)."""
    grids = grid_list(grid_size)
    counts = [h * w * d for h, w, d in grids]
    if sum(counts) != features.shape[0]:
        raise ValueError(f"{features.shape[0]} windows given but the grids {grids} hold {sum(counts)}")
    return [chunk.reshape(*g, *features.shape[1:]) for chunk, g in zip(features.split(counts), grids, strict=True)]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Mean of x over `dims` at mask==True, dividing by max(count, 1) so empty sets give zeros, not NaN."""
    m = mask.to(x.dtype).unsqueeze(-1)
    count = m.sum(dim=tuple(dims)).clamp(min=1)
    return (x * m).sum(dim=tuple(dims)) / count


@dataclass
class GlobalOutput:
    cls: torch.Tensor  # (B, Ec)
    average: torch.Tensor  # (B, Ec) masked mean of the valid window tokens
    spatial: torch.Tensor  # (B, Hm, Wm, Dm, Ec)
    tokens: torch.Tensor  # (B, 1 + Hm*Wm*Dm, Ec), raw transformer output
    inputs: torch.Tensor  # (B, Hm*Wm*Dm, 2F), what patch_proj received


@dataclass
class DepthOutput:
    cls: torch.Tensor  # (B, Ec)
    perslice: torch.Tensor  # (B, T*Dm, Ec), in-plane masked mean per depth cell
    valid_depth_mask: torch.Tensor  # (B, T*Dm) bool
    spatial: torch.Tensor  # (B, Hm, Wm, T*Dm, Ec)


class FeatureCombiner(nn.Module):
    """Combiner ViT. `feature_dim` = window-feature width F, `embed_dim` = Ec."""

    def __init__(
        self,
        feature_dim: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        rope_base: float = 100.0,
        init_values: float = 1.0,
        axis_patch_proj: bool = True,
        axis_input: AxisInput = "axisproj",
        rope_mode: RopeMode = "physical",
    ):
        super().__init__()
        self.feature_dim = feature_dim
        self.embed_dim = embed_dim
        self.axis_input: AxisInput = axis_input
        self.rope_mode: RopeMode = rope_mode
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.patch_proj = nn.Linear(2 * feature_dim, embed_dim)
        self.rope = Rope3D(embed_dim // num_heads, rope_base)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, init_values) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.axis_patch_proj = nn.Linear(feature_dim, embed_dim) if axis_patch_proj else None
        if axis_input == "axisproj" and not axis_patch_proj:
            raise ValueError("axis_input='axisproj' needs the axis_patch_proj layer")
        init_vit_weights(self)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    @torch.no_grad()
    def fold_input_standardization(self, stats: dict[str, torch.Tensor], min_std: float = 1e-3) -> None:
        """Make the input projections see standardised window features: with per-channel `stats`
        ({"cls_mean", "cls_std", "patch_average_mean", ..., "axis2_std"}, each (feature_dim,), from TRAIN
        features), W <- W / std and b <- b - (W / std) @ mean, which equals standardising the inputs.

        Why: the features of a frozen CNN (post-ReLU averages) share a large common component; a fresh
        combiner maps every scan to nearly the same vector and the contrastive heads collapse. Folding keeps
        the feature cache and the encoder untouched, so it works for any encoder and costs nothing later."""

        def fold(layer: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
            std = std.to(layer.weight).clamp_min(min_std)
            w = layer.weight / std
            layer.bias.sub_(w @ mean.to(layer.weight))
            layer.weight.copy_(w)

        fold(
            self.patch_proj,
            torch.cat([stats["cls_mean"], stats["patch_average_mean"]]),
            torch.cat([stats["cls_std"], stats["patch_average_std"]]),
        )
        if self.axis_patch_proj is not None:
            fold(self.axis_patch_proj, stats["axis2_mean"], stats["axis2_std"])

    def init_axis_patch_proj_from_patch_proj(self) -> None:
        """Start axis_patch_proj as the patch-feature half of patch_proj (how the released model was initialised)."""
        if self.axis_patch_proj is None:
            raise ValueError("this combiner has no axis_patch_proj")
        with torch.no_grad():
            self.axis_patch_proj.weight.copy_(self.patch_proj.weight[:, self.feature_dim :])
            self.axis_patch_proj.bias.copy_(self.patch_proj.bias)

    def forward_projected(self, x: torch.Tensor, rope, token_mask: torch.Tensor | None) -> torch.Tensor:
        """Core transformer: x (B, N, Ec) already projected; token_mask (B, N) True = valid key. -> (B, 1+N, Ec)."""
        b = x.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1)
        key_mask = None
        if token_mask is not None:
            key_mask = torch.cat([token_mask.new_ones(b, 1), token_mask.bool()], dim=1)
        for block in self.blocks:
            x = block(x, rope=rope, key_mask=key_mask)
        return self.norm(x)

    @staticmethod
    def _mask_and_grids(window_mask, grid_size, padded_grid):
        grids = grid_list(grid_size)
        if len(grids) == 1 and grids[0] == tuple(padded_grid) and window_mask is None:
            return None, grids  # a single unpadded scan: masking would change nothing
        if window_mask is None:
            window_mask = window_mask_from_grids(grids, tuple(padded_grid))
        return window_mask.bool(), grids

    def forward_global(self, cls, patch_average, window_mask=None, grid_size=None) -> GlobalOutput:
        """cls / patch_average (B, Hm, Wm, Dm, F) zero-padded; window_mask (B, Hm, Wm, Dm); grid_size (B, 3)."""
        b, hm, wm, dm, _ = cls.shape
        if grid_size is None:
            grid_size = [(hm, wm, dm)] * b if window_mask is None else grids_from_mask(window_mask)
        mask, grids = self._mask_and_grids(window_mask, grid_size, (hm, wm, dm))
        inputs = torch.cat([cls, patch_average], dim=-1).reshape(b, hm * wm * dm, -1)
        rope = self.rope.batched_tables(grids, (hm, wm, dm))
        token_mask = None if mask is None else mask.reshape(b, -1).to(inputs.device)
        tokens = self.forward_projected(self.patch_proj(inputs), rope, token_mask)
        spatial = tokens[:, 1:].reshape(b, hm, wm, dm, -1)
        if mask is None:
            full = torch.ones(b, hm, wm, dm, dtype=torch.bool, device=tokens.device)
        else:
            full = mask.to(tokens.device)
        average = masked_mean(spatial, full, dims=(1, 2, 3))
        return GlobalOutput(cls=tokens[:, 0], average=average, spatial=spatial, tokens=tokens, inputs=inputs)

    def encode_global(self, cls, patch_average, window_mask=None, grid_size=None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.forward_global(cls, patch_average, window_mask, grid_size)
        return out.cls, out.average

    def forward_depth(
        self,
        cls,
        axis2,
        window_mask=None,
        grid_size=None,
        axis_input: AxisInput | None = None,
        rope_mode: RopeMode | None = None,
    ) -> DepthOutput:
        """cls (B, Hm, Wm, Dm, F), axis2 (B, Hm, Wm, Dm, T, F) -> per-depth-cell features on the (Hm, Wm, T*Dm) grid.

        Depth index of a token: d2 = window_depth * T + k. "physical" RoPE divides depth coordinates by the window
        count Dg (not T*Dg), "regular" by the token count.
        """
        axis_input = axis_input or self.axis_input
        rope_mode = rope_mode or self.rope_mode
        b, hm, wm, dm, t, _ = axis2.shape
        if grid_size is None:
            grid_size = [(hm, wm, dm)] * b if window_mask is None else grids_from_mask(window_mask)
        grids = grid_list(grid_size)
        if window_mask is None:
            window_mask = window_mask_from_grids(grids, (hm, wm, dm), device=axis2.device)
        token_mask3d = window_mask.bool().repeat_interleave(t, dim=3)  # (B, Hm, Wm, T*Dm)
        if axis_input == "axisproj":
            if self.axis_patch_proj is None:
                raise ValueError("this combiner has no axis_patch_proj; use axis_input='clsinput'")
            x = self.axis_patch_proj(axis2.reshape(b, -1, axis2.shape[-1]))
        elif axis_input == "clsinput":
            cls_rep = cls.unsqueeze(4).expand_as(axis2)
            x = self.patch_proj(torch.cat([cls_rep, axis2], dim=-1).reshape(b, hm * wm * dm * t, -1))
        else:
            raise ValueError(f"unknown axis2 input mode {axis_input!r}")
        token_grids = [(h, w, d * t) for h, w, d in grids]
        if rope_mode == "physical":
            divisors = [(h, w, d) for h, w, d in grids]
        elif rope_mode == "regular":
            divisors = token_grids
        else:
            raise ValueError(f"unknown rope mode {rope_mode!r}")
        rope = self.rope.batched_tables(token_grids, (hm, wm, dm * t), divisors)
        tokens = self.forward_projected(x, rope, token_mask3d.reshape(b, -1))
        spatial = tokens[:, 1:].reshape(b, hm, wm, dm * t, -1)
        perslice = masked_mean(spatial, token_mask3d, dims=(1, 2))
        valid = token_mask3d.any(dim=1).any(dim=1)
        return DepthOutput(cls=tokens[:, 0], perslice=perslice, valid_depth_mask=valid, spatial=spatial)

    def encode_depth(self, cls, axis2, window_mask=None, grid_size=None, **kwargs):
        out = self.forward_depth(cls, axis2, window_mask, grid_size, **kwargs)
        return out.cls, out.perslice, out.valid_depth_mask
