"""`concat`: several frozen window encoders side by side, their features concatenated along the feature axis.

Every part sees the same windows; cls, patch_average, axis2 and (when every part offers them on the same grid)
the spatial tokens are concatenated, so e.g. HU histograms (what a finding does to densities) and a learned light3d
encoder (shapes and texture) feed one feature cache. Config: `WindowEncoderConfig(kind="concat",
embed_dim=<sum of the parts' feature dims>, options={"parts": [{kind, embed_dim, feature_dim?, options?}, ...]})`;
each part is built by its own registered builder with the outer window size. Part state dicts live under
`parts.<i>.`, so a saved model carries every part's weights and buffers.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import ConfigError
from .config import WindowEncoderConfig
from .window_encoder import WINDOW_ENCODERS, WindowEncoder, WindowFeatures, register_window_encoder


class ConcatWindowEncoder(WindowEncoder):
    def __init__(self, parts: list[WindowEncoder]):
        super().__init__()
        if not parts:
            raise ValueError("a concat window encoder needs at least one part")
        self.parts = nn.ModuleList(parts)
        sizes = {tuple(p.window_size) for p in parts}
        tokens = {int(p.depth_tokens) for p in parts}
        if len(sizes) != 1 or len(tokens) != 1:
            raise ValueError(f"concat parts disagree on window size {sizes} or depth tokens {tokens}")
        self.window_size = sizes.pop()
        self.depth_tokens = tokens.pop()
        self.feature_dim = self.embed_dim = sum(int(p.feature_dim) for p in parts)
        self.has_spatial_tokens = all(getattr(p, "has_spatial_tokens", False) for p in parts)

    def forward_features(self, windows: torch.Tensor, spatial: bool = False) -> WindowFeatures:
        outs = [p.forward_features(windows, spatial=True) if spatial else p.forward_features(windows)
                for p in self.parts]  # fmt: skip
        grid = None
        if spatial:
            shapes = {tuple(o.spatial.shape[1:-1]) for o in outs}
            if len(shapes) != 1:
                raise ValueError(f"concat parts give spatial grids of different shapes {shapes}")
            grid = torch.cat([o.spatial.float() for o in outs], dim=-1)
        return WindowFeatures(torch.cat([o.cls.float() for o in outs], dim=-1),
                              torch.cat([o.patch_average.float() for o in outs], dim=-1),
                              torch.cat([o.axis2.float() for o in outs], dim=-1), spatial=grid)  # fmt: skip

    @torch.no_grad()
    def fit_standardization(self, batches: torch.Tensor | Iterable[torch.Tensor]) -> None:
        """Fit every part that standardises itself (e.g. histograms) on the same windows (training data only)."""
        fit = [p for p in self.parts if hasattr(p, "fit_standardization")]
        if len(fit) > 1 and not isinstance(batches, torch.Tensor):
            batches = list(batches)  # several parts read the same stream
        for p in fit:
            p.fit_standardization(batches)


def _build_concat(cfg) -> ConcatWindowEncoder:
    opts = dict(cfg.options)
    specs = opts.pop("parts", None)
    if opts or not isinstance(specs, list) or not specs:
        raise ConfigError("concat window encoder: options must be {parts: [{kind, embed_dim, options}, ...]}")
    parts = []
    for spec in specs:
        sub = WindowEncoderConfig.model_validate({**spec, "window_size": cfg.window_size})
        if sub.kind not in WINDOW_ENCODERS:
            try:
                importlib.import_module(f"{__package__}.{sub.kind}")
            except ImportError:
                pass
        if sub.kind not in WINDOW_ENCODERS or sub.kind == "concat":
            raise ConfigError(f"concat window encoder: unknown part kind {sub.kind!r}")
        parts.append(WINDOW_ENCODERS[sub.kind](sub))
    enc = ConcatWindowEncoder(parts)
    if cfg.resolved_feature_dim != enc.feature_dim:
        raise ConfigError(f"concat window encoder gives {enc.feature_dim}-d features; set window_encoder.embed_dim "
                          f"to {enc.feature_dim}")  # fmt: skip
    return enc


register_window_encoder("concat", _build_concat)
