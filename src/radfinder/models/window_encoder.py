"""Window encoders: one 128 x 128 x 32 window in, per-window features out.

`WindowEncoder` is the interface every frozen image backbone implements (the SPECTRE-style ViT here, the inflated
3D ResNet in `resnet3d.py`); the combiner and the feature cache only ever see `WindowFeatures`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .layers import LN_EPS, Block, init_vit_weights
from .rope import Rope3D


@dataclass
class WindowFeatures:
    """Per-window features taken from the encoder's final (normed) tokens.

    cls (N, F); patch_average (N, F): unmasked mean of all patch tokens; axis2 (N, T, F): depth profile, the patch
    tokens averaged over the two in-plane axes (T = 8 depth tokens of 4 slices each for RadFinder); spatial
    (N, Sh, Sw, T, F), only from encoders that offer it and only when asked: a coarse in-plane grid per depth
    token, for pooling over anatomy masks.
    """

    cls: torch.Tensor
    patch_average: torch.Tensor
    axis2: torch.Tensor
    spatial: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.cls.shape[0]

    def _parts(self) -> tuple[torch.Tensor | None, ...]:
        return (self.cls, self.patch_average, self.axis2, self.spatial)

    def to(self, *args, **kwargs) -> WindowFeatures:
        return WindowFeatures(*(None if t is None else t.to(*args, **kwargs) for t in self._parts()))

    @staticmethod
    def cat(parts: list[WindowFeatures]) -> WindowFeatures:
        spatial = None if any(p.spatial is None for p in parts) else torch.cat([p.spatial for p in parts])
        return WindowFeatures(
            torch.cat([p.cls for p in parts]),
            torch.cat([p.patch_average for p in parts]),
            torch.cat([p.axis2 for p in parts]),
            spatial,
        )

    def __getitem__(self, index) -> WindowFeatures:
        return WindowFeatures(*(None if t is None else t[index] for t in self._parts()))


class WindowEncoder(nn.Module):
    """Base class of window encoders.

    Subclasses set `embed_dim` (internal width), `feature_dim` (width of the features), `depth_tokens` and
    `window_size`, and implement `forward_features(windows (n, 1, *window_size)) -> WindowFeatures`.
    `forward` adds chunking so that all windows of a batch of scans can be passed at once with bounded memory.
    """

    embed_dim: int
    feature_dim: int
    depth_tokens: int = 8
    window_size: tuple[int, int, int] = (128, 128, 32)
    has_spatial_tokens: bool = False  # forward_features(..., spatial=True) gives WindowFeatures.spatial

    @property
    def depth_positions(self) -> int:
        """Distinct depth positions per window the encoder resolves; fewer than `depth_tokens` means its depth
        tokens repeat values (a coarse backbone) and depth cells finer than its resolution carry no information."""
        return int(self.depth_tokens)

    def depth_resolution(self, slice_mm: float) -> dict:
        """What the depth tokens can tell apart, for model info and depth-cell outputs (`slice_mm`: the spec's
        spacing along depth)."""
        wd = int(self.window_size[2])
        positions = max(1, min(self.depth_positions, self.depth_tokens))
        return {"depth_tokens_per_window": int(self.depth_tokens), "distinct_depth_positions_per_window": positions,
                "depth_token_mm": wd * slice_mm / self.depth_tokens, "depth_resolution_mm": wd * slice_mm / positions,
                "coarse": positions < self.depth_tokens}

    def forward_features(self, windows: torch.Tensor) -> WindowFeatures:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, windows: torch.Tensor, chunk_size: int | None = None, spatial: bool = False) -> WindowFeatures:
        """Features of (N, 1, *window_size) windows; `spatial=True` also asks for the coarse spatial token grid,
        which only some encoders give (the others raise)."""
        if windows.dim() != 5 or windows.shape[1] != 1 or tuple(windows.shape[2:]) != tuple(self.window_size):
            raise ValueError(
                f"{type(self).__name__} expects windows of shape (N, 1, {', '.join(map(str, self.window_size))}), "
                f"got {tuple(windows.shape)}"
            )
        kw = {"spatial": True} if spatial else {}
        if spatial and not self.has_spatial_tokens:
            raise ValueError(f"{type(self).__name__} gives no spatial token grid")
        if chunk_size is None or windows.shape[0] <= chunk_size:
            return self.forward_features(windows, **kw)
        return WindowFeatures.cat([self.forward_features(c, **kw) for c in windows.split(chunk_size)])


def fold_patch_embed(weight: torch.Tensor) -> torch.Tensor:
    """Fold a (..., 8) depth kernel into (..., 4) by summing adjacent depth taps (W4[k] = W8[2k] + W8[2k+1]).

    A backbone pretrained with 16x16x8 patches at 1.5 mm then sees 16x16x4 patches at 3 mm that cover the same
    physical extent; the bias is unchanged.
    """
    if weight.shape[-1] % 2:
        raise ValueError(f"cannot fold an odd depth kernel of size {weight.shape[-1]}")
    return weight[..., 0::2] + weight[..., 1::2]


class PatchEmbed3D(nn.Module):
    def __init__(self, embed_dim: int, patch_size: tuple[int, int, int]):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv3d(1, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (N, E, h, w, d)
        return x.permute(0, 2, 3, 4, 1)  # channels last: token t = (i*w + j)*d + k after flattening


class ViTWindowEncoder(WindowEncoder):
    """SPECTRE-style ViT: Conv3d patches, CLS token, pre-norm blocks with LayerScale and 3D RoPE, final LN.

    No position embedding: RoPE (base `rope_base`, grid = patches per window) carries all position information.
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        patch_size: tuple[int, int, int] = (16, 16, 4),
        window_size: tuple[int, int, int] = (128, 128, 32),
        rope_base: float = 1000.0,
        init_values: float = 1.0,
    ):
        super().__init__()
        if any(w % p for w, p in zip(window_size, patch_size, strict=True)):
            raise ValueError(f"window {window_size} is not a multiple of the patch size {patch_size}")
        self.embed_dim = self.feature_dim = embed_dim
        self.num_heads = num_heads
        self.window_size = tuple(window_size)
        self.patch_grid = tuple(w // p for w, p in zip(window_size, patch_size, strict=True))
        self.depth_tokens = self.patch_grid[2]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.patch_embed = PatchEmbed3D(embed_dim, patch_size)
        self.rope = Rope3D(embed_dim // num_heads, rope_base)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, init_values) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        init_vit_weights(self)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward_tokens(self, windows: torch.Tensor, return_intermediates: bool = False):
        """Normed tokens (n, 1 + h*w*d, E); optionally also the conv output and the tokens after block 0."""
        x = windows.to(self.cls_token.dtype)
        patches = self.patch_embed(x)
        n = patches.shape[0]
        x = torch.cat([self.cls_token.expand(n, -1, -1), patches.reshape(n, -1, self.embed_dim)], dim=1)
        rope = self.rope.tables(self.patch_grid)
        inter = {"patch_embed_out": patches}
        for i, block in enumerate(self.blocks):
            x = block(x, rope=rope)
            if i == 0:
                inter["after_block0"] = x
        tokens = self.norm(x)
        return (tokens, inter) if return_intermediates else tokens

    def features_from_tokens(self, tokens: torch.Tensor) -> WindowFeatures:
        h, w, d = self.patch_grid
        patches = tokens[:, 1:]
        axis2 = patches.reshape(tokens.shape[0], h, w, d, -1).mean(dim=(1, 2))
        return WindowFeatures(cls=tokens[:, 0], patch_average=patches.mean(dim=1), axis2=axis2)

    def forward_features(self, windows: torch.Tensor) -> WindowFeatures:
        return self.features_from_tokens(self.forward_tokens(windows))


# Registry of window-encoder builders: kind -> callable(WindowEncoderConfig) -> WindowEncoder. Other backbones
# (e.g. the inflated 3D ResNet) register themselves here so that model configs can name them.
WINDOW_ENCODERS: dict[str, Callable[..., WindowEncoder]] = {}


def register_window_encoder(kind: str, builder: Callable[..., WindowEncoder]) -> None:
    WINDOW_ENCODERS[kind] = builder


def _build_vit(cfg) -> ViTWindowEncoder:
    return ViTWindowEncoder(
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        patch_size=tuple(cfg.patch_size),
        window_size=tuple(cfg.window_size),
        rope_base=cfg.rope_base,
        init_values=cfg.init_values,
    )


register_window_encoder("vit", _build_vit)
