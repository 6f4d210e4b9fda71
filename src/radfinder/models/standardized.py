"""Per-feature standardisation shared by the weight-free window encoders (`histogram`, `filterbank`).

Raw pooled statistics of different chest CTs are alike in most channels, so a combiner trained on them collapses
to one embedding; these encoders therefore store per-feature means and standard deviations, fitted on training
windows only, as buffers. Buffers travel with the checkpoint and enter the backbone hash of every feature cache,
so features standardised with other statistics are never mixed with these.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .window_encoder import WindowEncoder, WindowFeatures

STANDARDIZED_PARTS = ("cls", "patch_average", "axis2")


class StandardizedWindowEncoder(WindowEncoder):
    """A window encoder whose `raw_features(windows, spatial)` are standardised per feature; spatial tokens
    share `axis2`'s statistics (they are the same features on a finer grid, so they add no buffers)."""

    feature_dim: int

    def _init_standardization(self) -> None:
        for name in STANDARDIZED_PARTS:
            self.register_buffer(f"{name}_mean", torch.zeros(self.feature_dim))
            self.register_buffer(f"{name}_std", torch.ones(self.feature_dim))

    def raw_features(self, windows: torch.Tensor, spatial: bool = False) -> WindowFeatures:
        raise NotImplementedError

    def forward_features(self, windows: torch.Tensor, spatial: bool = False) -> WindowFeatures:
        raw = self.raw_features(windows, spatial=spatial)
        return WindowFeatures(
            cls=(raw.cls - self.cls_mean) / self.cls_std,
            patch_average=(raw.patch_average - self.patch_average_mean) / self.patch_average_std,
            axis2=(raw.axis2 - self.axis2_mean) / self.axis2_std,
            spatial=None if raw.spatial is None else (raw.spatial - self.axis2_mean) / self.axis2_std,
        )

    @torch.no_grad()
    def fit_standardization(self, batches: torch.Tensor | Iterable[torch.Tensor], min_std: float = 1e-3) -> None:
        """Per-feature mean and standard deviation over windows (use training data only); `batches` is one
        (N, 1, *window) tensor or an iterable of them. Only float64 running sums are kept, so a whole training
        split can stream through."""
        if isinstance(batches, torch.Tensor):
            batches = batches.split(32)
        acc: dict[str, torch.Tensor | None] = {name: None for name in STANDARDIZED_PARTS}
        for b in batches:
            raw = self.raw_features(b)
            for name in acc:
                x = getattr(raw, name).reshape(-1, self.feature_dim).double()
                s = torch.stack([torch.full_like(x[0], len(x)), x.sum(0), (x * x).sum(0)])
                acc[name] = s if acc[name] is None else acc[name] + s
        if acc["cls"] is None:
            raise ValueError("fit_standardization needs at least one window")
        for name, (n, s1, s2) in acc.items():
            mean = s1 / n
            var = ((s2 - n * mean * mean) / (n - 1).clamp_min(1.0)).clamp_min(0.0)
            getattr(self, f"{name}_mean").copy_(mean.float())
            getattr(self, f"{name}_std").copy_(var.sqrt().clamp_min(min_std).float())
