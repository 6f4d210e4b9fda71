"""A frozen window encoder without learned weights: regional Hounsfield-unit histograms (a radiomics baseline).

Every window is split into four in-plane quadrants (left/right x anterior/posterior); for each quadrant the
fraction of voxels in each HU bin is computed over the whole window (`cls`, square-root scaled so rare but
telling voxels, such as calcium or a small nodule, are not drowned by air) and per depth slab (`axis2`: one
histogram set per depth token, i.e. per 12 mm at 3 mm slices). `patch_average` holds the same whole-window
fractions on a linear scale. The bins separate emphysema, aerated lung, ground glass, consolidation and fluid,
fat, soft tissue, contrast/calcium and metal, so the features describe what a chest CT finding changes.

Histograms of different chest CTs are alike in most bins, so the raw fractions vary little between scans; a
combiner trained on them collapses to one embedding. `fit_standardization` stores per-feature means and standard
deviations (from training windows only) as buffers, which travel with the checkpoint and enter the backbone hash
of every feature cache, and the outputs are standardised with them.

With `spatial_grid` (Sh, Sw) it also offers spatial tokens (`forward(..., spatial=True)`, for fVLM's anatomy
pooling): per token of (wh/Sh, ww/Sw, wd/T) voxels, the square-root HU-bin fractions of its four in-plane
quadrants (the same 4 x bins layout as `axis2`, on a finer grid), standardised with `axis2`'s statistics, so the
option adds no weights and leaves the backbone hash of a fitted encoder unchanged.

It needs no download and runs fast on a CPU, which makes it the frozen encoder of the CPU demo and a baseline
for what a pretrained encoder (SPECTRE ViT-L, the ASTRA ResNet-152) adds. Inputs are windows in [0, 1] from
the HU window [-1000, 1000] of the preprocessing contract; set `hu_window` if the spec differs.
"""

from __future__ import annotations

import torch

from .standardized import StandardizedWindowEncoder
from .window_encoder import WindowFeatures, register_window_encoder

# Bin edges in HU (the open ends catch everything below -950 and above 1000 after clipping).
DEFAULT_HU_EDGES: tuple[float, ...] = (
    -950, -900, -850, -800, -700, -600, -500, -300, -150, -50, 0, 20, 40, 60, 100, 200, 400, 700, 990,
)  # fmt: skip


class HistogramWindowEncoder(StandardizedWindowEncoder):
    def __init__(
        self,
        hu_edges: tuple[float, ...] = DEFAULT_HU_EDGES,
        hu_window: tuple[float, float] = (-1000.0, 1000.0),
        depth_tokens: int = 8,
        window_size: tuple[int, int, int] = (128, 128, 32),
        spatial_grid: tuple[int, int] | None = None,
    ):
        super().__init__()
        lo, hi = hu_window
        edges = (torch.tensor(hu_edges, dtype=torch.float32) - lo) / (hi - lo)
        if not torch.all(edges[1:] > edges[:-1]):
            raise ValueError("hu_edges must be strictly increasing")
        self.register_buffer("edges", edges, persistent=False)
        self.n_bins = len(hu_edges) + 1
        self.depth_tokens = int(depth_tokens)
        self.window_size = tuple(int(v) for v in window_size)
        if self.window_size[2] % self.depth_tokens or self.window_size[0] % 2 or self.window_size[1] % 2:
            raise ValueError(f"window {self.window_size} must split into 2x2 quadrants and {depth_tokens} slabs")
        self.feature_dim = self.embed_dim = 4 * self.n_bins
        self.spatial_grid = None if spatial_grid is None else (int(spatial_grid[0]), int(spatial_grid[1]))
        self.has_spatial_tokens = self.spatial_grid is not None
        if self.spatial_grid is not None:
            sh, sw = self.spatial_grid
            if self.window_size[0] % (2 * sh) or self.window_size[1] % (2 * sw):
                raise ValueError(f"window {self.window_size} does not split into a {self.spatial_grid} token grid "
                                 "of 2 x 2 quadrants")  # fmt: skip
        self._init_standardization()
        self.requires_grad_(False)

    def _spatial_raw(self, idx: torch.Tensor) -> torch.Tensor:
        """(n, Sh, Sw, T, 4 * bins) square-root HU-bin fractions of each token's four in-plane quadrants."""
        n = idx.shape[0]
        h, w, d = self.window_size
        t = self.depth_tokens
        sh, sw = self.spatial_grid
        x = idx.view(n, sh, 2, h // (2 * sh), sw, 2, w // (2 * sw), t, d // t)
        x = x.permute(0, 1, 4, 7, 2, 5, 3, 6, 8).reshape(n, sh, sw, t, 4, -1)
        onehot = torch.zeros(n, sh, sw, t, 4, self.n_bins, dtype=torch.float32, device=idx.device)
        onehot.scatter_add_(5, x, torch.ones_like(x, dtype=torch.float32))
        return (onehot / x.shape[-1]).sqrt().reshape(n, sh, sw, t, -1)

    def raw_features(self, windows: torch.Tensor, spatial: bool = False) -> WindowFeatures:
        """Unstandardised square-root (cls, axis2, spatial) and linear (patch_average) HU-bin fractions."""
        n = windows.shape[0]
        h, w, d = self.window_size
        t = self.depth_tokens
        with torch.no_grad():
            idx = torch.bucketize(windows[:, 0].float().contiguous(), self.edges)  # (n, h, w, d)
            grid = self._spatial_raw(idx) if spatial else None
            # (n, 2, h/2, 2, w/2, t, d/t): quadrant x quadrant x depth slab blocks
            idx = idx.view(n, 2, h // 2, 2, w // 2, t, d // t).permute(0, 1, 3, 5, 2, 4, 6).reshape(n, 4, t, -1)
            onehot = torch.zeros(n, 4, t, self.n_bins, dtype=torch.float32, device=windows.device)
            onehot.scatter_add_(3, idx, torch.ones_like(idx, dtype=torch.float32))
            per_slab = onehot / idx.shape[-1]  # fractions per quadrant and slab
            whole = per_slab.mean(dim=2)  # (n, 4, bins)
            axis2 = per_slab.permute(0, 2, 1, 3).reshape(n, t, -1).sqrt()
        return WindowFeatures(cls=whole.reshape(n, -1).sqrt(), patch_average=whole.reshape(n, -1), axis2=axis2,
                              spatial=grid)




def _build_histogram(cfg) -> HistogramWindowEncoder:
    """Builder for `WindowEncoderConfig(kind="histogram", embed_dim=4 * (len(hu_edges) + 1), options={...})`.

    options: hu_edges (list of HU), hu_window ([low, high] of the spec), depth_tokens, spatial_grid ([Sh, Sw]:
    offer spatial tokens).
    """
    opts = dict(cfg.options)
    grid = opts.pop("spatial_grid", None)
    enc = HistogramWindowEncoder(
        hu_edges=tuple(opts.pop("hu_edges", DEFAULT_HU_EDGES)),
        hu_window=tuple(opts.pop("hu_window", (-1000.0, 1000.0))),
        depth_tokens=int(opts.pop("depth_tokens", 8)),
        window_size=tuple(cfg.window_size),
        spatial_grid=None if grid is None else tuple(grid),
    )
    if opts:
        from ..errors import ConfigError

        raise ConfigError(f"histogram window encoder: unknown options {sorted(opts)}")
    if cfg.resolved_feature_dim != enc.feature_dim:
        from ..errors import ConfigError

        raise ConfigError(
            f"histogram window encoder gives {enc.feature_dim}-d features; set window_encoder.embed_dim "
            f"(or feature_dim) to {enc.feature_dim}"
        )
    return enc


register_window_encoder("histogram", _build_histogram)
