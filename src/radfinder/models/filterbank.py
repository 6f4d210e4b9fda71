"""`filterbank`: a frozen window encoder without learned weights that sees shapes, not only densities.

HU histograms (`histogram.py`) say how much of a window is ground glass or soft tissue, but a 10 mm nodule is
~100 of a window's half million voxels and changes no histogram bin; what sets it apart is its shape, a bright
blob in dark lung. This encoder measures shapes with fixed filters: at three scales (Gaussian sigma 3, 5 and 8 mm
by default, i.e. blobs of about 10, 17 and 28 mm) the Hessian of the Gaussian-smoothed HU volume is taken
(scale-normalised: times sigma^2, so responses are in HU at every scale), and from its sorted eigenvalues
l1 >= l2 >= l3 per voxel:

  bright blob relu(-l1) (nodule), bright tube relu(-l2 - |l1|) (vessel, fibrotic band), bright sheet
  relu(-l3 - |l2|) (plate atelectasis, fissure, septa); dark blob relu(l3) (bulla, emphysema hole), dark tube
  relu(l2 - |l3|) (airway, dilated bronchus), dark sheet relu(l1 - |l2|); the Laplacian (LoG) split into its
  bright and dark parts, and the gradient magnitude times sigma (edges: effusion level, hernia wall).

plus the fractions of voxels in HU bands (emphysema, aerated lung, dense lung, ground glass, fat, soft tissue,
enhanced blood, calcium, bone). Each is pooled in two regions: a lung field (air-like tissue, 8 mm smoothed HU
< -300, with dense tissue in at least 3 of the 4 in-plane directions inside the window, which separates lungs from
air outside the body at the demo spec, where a window holds a quarter of a chest) and the body outside it; per
region the mean and the maximum (a small finding vanishes under a mean, not under a max), plus the region's voxel
fraction. Pooling happens per cell of an (Sh, Sw) in-plane grid per depth token (default 8 x 8 x 8: 32 x 32 x 12
mm at the demo spec), so the features keep location: `spatial` holds the cells (fVLM's anatomy pooling),
`axis2` the depth tokens (localization), `cls` the whole window, and `patch_average` the region-weighted mean of
the cells' features (for a max channel, how widespread a response is). Pooled values are square-root
compressed and, like the histograms, standardised with per-feature statistics fitted on training windows only
(`fit_standardization`, buffers that travel with the checkpoint).

Everything is separable Gaussian smoothing and finite differences in torch, on grids subsampled to each scale
(a blurred image needs no finer grid): about 1/4 of the input voxels at 3 mm, 1/8 at 5 mm and 1/32 at 8 mm.
Inputs are windows in [0, 1] of the preprocessing contract's HU window; `spacing_mm` is the spec's voxel size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .standardized import StandardizedWindowEncoder
from .window_encoder import WindowFeatures, register_window_encoder

DEFAULT_SCALES_MM: tuple[float, ...] = (3.0, 5.0, 8.0)
# Band edges in HU: emphysema | aerated lung | dense lung (mosaic) | ground glass | septal / partial volume | fat |
# soft tissue and fluid | enhanced blood | calcium | bone and metal
DEFAULT_BAND_EDGES: tuple[float, ...] = (-950, -800, -650, -350, -150, -30, 80, 200, 500)
SHAPE_MEASURES = ("bright_blob", "bright_tube", "bright_sheet", "dark_blob", "dark_tube", "dark_sheet",
                  "log_bright", "log_dark", "gradient")  # fmt: skip
REGIONS = ("lung", "body")
LUNG_HU = -300.0  # 8 mm smoothed HU below this is air-like (lung, including nodules up to ~25 mm)


def _gauss_taps(sigma_vox: float) -> torch.Tensor:
    radius = max(1, math.ceil(2.5 * sigma_vox))  # 2.5 sigma keeps 98.8% of the mass
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / max(sigma_vox, 1e-3)) ** 2)
    return k / k.sum()


def _blur_axis(x: torch.Tensor, taps: torch.Tensor, dim: int) -> torch.Tensor:
    """1D convolution along `dim` (replicate border) as a weighted sum of shifted views: for a single channel
    and under a dozen taps this is faster on a CPU than conv3d."""
    r = (len(taps) - 1) // 2
    if r == 0:
        return x
    n = x.shape[dim]
    lo, hi = x.narrow(dim, 0, 1), x.narrow(dim, n - 1, 1)
    xp = torch.cat([lo.expand_as(x.narrow(dim, 0, r)), x, hi.expand_as(x.narrow(dim, 0, r))], dim=dim)
    out = xp.narrow(dim, 0, n) * float(taps[0])
    for i in range(1, len(taps)):
        out.add_(xp.narrow(dim, i, n), alpha=float(taps[i]))
    return out


def _blur(x: torch.Tensor, sigma_vox: Sequence[float]) -> torch.Tensor:
    for axis, s in enumerate(sigma_vox):
        if s > 0.05:
            x = _blur_axis(x, _gauss_taps(s), x.dim() - 3 + axis)
    return x


def _block_reduce(x: torch.Tensor, block: Sequence[int], op: str) -> torch.Tensor:
    """Sum ("sum") or maximum ("max") over blocks of the last three axes. Power-of-two blocks are halved pairwise
    on strided views (measured 2-7x faster on a CPU than avg_pool3d / max_pool3d, which also compute indices)."""
    if all(k & (k - 1) == 0 for k in block):
        for axis, k in enumerate(block):
            d = x.dim() - 3 + axis
            while k > 1:
                a, b = [slice(None)] * x.dim(), [slice(None)] * x.dim()
                a[d], b[d] = slice(0, None, 2), slice(1, None, 2)
                x = torch.maximum(x[tuple(a)], x[tuple(b)]) if op == "max" else torch.add(x[tuple(a)], x[tuple(b)])
                k //= 2
        return x
    if op == "max":
        return F.max_pool3d(x, tuple(block))
    return F.avg_pool3d(x, tuple(block)).mul_(math.prod(block))


def shape_measures(s: torch.Tensor, spacing_mm: Sequence[float], sigma_mm: float) -> torch.Tensor:
    """(n, 9, X, Y, Z) scale-normalised shape measures (`SHAPE_MEASURES`, HU) of a volume `s` (n, X, Y, Z) already
    smoothed with a Gaussian of `sigma_mm`, from its central-difference Hessian and gradient (replicate border).
    Written with in-place operations on views of one padded copy: the encoder's cost is memory traffic."""
    sp = F.pad(s.unsqueeze(1), (1, 1, 1, 1, 1, 1), mode="replicate").squeeze(1)
    c = sp[:, 1:-1, 1:-1, 1:-1]
    hx, hy, hz = (float(v) for v in spacing_mm)
    norm = sigma_mm * sigma_mm

    def second(fwd, bwd, h):
        return torch.add(fwd, bwd).sub_(c, alpha=2.0).mul_(norm / (h * h))

    xf, xb = sp[:, 2:, 1:-1, 1:-1], sp[:, :-2, 1:-1, 1:-1]
    yf, yb = sp[:, 1:-1, 2:, 1:-1], sp[:, 1:-1, :-2, 1:-1]
    zf, zb = sp[:, 1:-1, 1:-1, 2:], sp[:, 1:-1, 1:-1, :-2]
    a11, a22, a33 = second(xf, xb, hx), second(yf, yb, hy), second(zf, zb, hz)
    grad = torch.sub(xf, xb).square_().mul_(1.0 / (4 * hx * hx))
    grad.addcmul_(torch.sub(yf, yb), torch.sub(yf, yb), value=1.0 / (4 * hy * hy))
    grad.addcmul_(torch.sub(zf, zb), torch.sub(zf, zb), value=1.0 / (4 * hz * hz))
    grad.sqrt_().mul_(sigma_mm)
    m = sp[:, 1:-1]  # mixed derivatives: corners of the 2 x 2 neighbourhood in the (a, b) plane
    a12 = (torch.sub(sp[:, 2:, 2:, 1:-1], sp[:, 2:, :-2, 1:-1]).sub_(sp[:, :-2, 2:, 1:-1])
           .add_(sp[:, :-2, :-2, 1:-1]).mul_(norm / (4 * hx * hy)))  # fmt: skip
    a13 = (torch.sub(sp[:, 2:, 1:-1, 2:], sp[:, 2:, 1:-1, :-2]).sub_(sp[:, :-2, 1:-1, 2:])
           .add_(sp[:, :-2, 1:-1, :-2]).mul_(norm / (4 * hx * hz)))  # fmt: skip
    a23 = (torch.sub(m[:, :, 2:, 2:], m[:, :, 2:, :-2]).sub_(m[:, :, :-2, 2:])
           .add_(m[:, :, :-2, :-2]).mul_(norm / (4 * hy * hz)))  # fmt: skip
    # closed-form eigenvalues of the symmetric 3 x 3 Hessian (trigonometric method), sorted l1 >= l2 >= l3
    trace = a11 + a22 + a33
    q = trace / 3.0
    a11.sub_(q)
    a22.sub_(q)
    a33.sub_(q)  # now B = A - qI on the diagonal
    p2 = a12 * a12
    p2.addcmul_(a13, a13).addcmul_(a23, a23)
    det = a22 * a33
    det.addcmul_(a23, a23, value=-1.0).mul_(a11)
    det.addcmul_(a12, torch.mul(a12, a33).addcmul_(a23, a13, value=-1.0), value=-1.0)
    det.addcmul_(a13, torch.mul(a12, a23).addcmul_(a22, a13, value=-1.0))
    p2.mul_(2.0).addcmul_(a11, a11).addcmul_(a22, a22).addcmul_(a33, a33)
    p = p2.div_(6.0).clamp_min_(1e-12).sqrt_()
    phi = det.div_(p.pow(3).mul_(2.0)).clamp_(-1.0, 1.0).acos_().div_(3.0)
    l1 = torch.cos(phi).mul_(p).mul_(2.0).add_(q)
    l3 = phi.add_(2.0 * math.pi / 3.0).cos_().mul_(p).mul_(2.0).add_(q)
    l2 = torch.sub(trace, l1).sub_(l3)
    out = torch.empty((s.shape[0], len(SHAPE_MEASURES), *s.shape[1:]), dtype=s.dtype, device=s.device)
    torch.neg(l1, out=out[:, 0]).clamp_min_(0.0)  # bright blob: all three curvatures negative
    a1, a2, a3 = l1.abs(), l2.abs(), l3.abs()
    torch.neg(l2, out=out[:, 1]).sub_(a1).clamp_min_(0.0)  # bright tube
    torch.neg(l3, out=out[:, 2]).sub_(a2).clamp_min_(0.0)  # bright sheet
    torch.clamp_min(l3, 0.0, out=out[:, 3])  # dark blob
    torch.sub(l2, a3, out=out[:, 4]).clamp_min_(0.0)  # dark tube
    torch.sub(l1, a2, out=out[:, 5]).clamp_min_(0.0)  # dark sheet
    torch.neg(trace, out=out[:, 6]).clamp_min_(0.0)
    torch.clamp_min(trace, 0.0, out=out[:, 7])
    out[:, 8] = grad
    return out


def _enclosed(tissue: torch.Tensor) -> torch.Tensor:
    """(n, X, Y, Z): how many of the 4 in-plane directions (-x, +x, -y, +y) meet `tissue` inside the window."""
    t = tissue.to(torch.uint8)
    hits = 0
    for dim in (1, 2):
        hits = hits + torch.cummax(t, dim=dim).values + torch.cummax(t.flip(dim), dim=dim).values.flip(dim)
    return hits


class FilterBankWindowEncoder(StandardizedWindowEncoder):
    def __init__(
        self,
        window_size: tuple[int, int, int] = (128, 128, 32),
        depth_tokens: int = 8,
        spacing_mm: tuple[float, float, float] = (2.0, 2.0, 3.0),
        hu_window: tuple[float, float] = (-1000.0, 1000.0),
        scales_mm: Sequence[float] = DEFAULT_SCALES_MM,
        band_edges: Sequence[float] = DEFAULT_BAND_EDGES,
        spatial_grid: tuple[int, int] | None = None,
        cell_grid: tuple[int, int] = (8, 8),
    ):
        super().__init__()
        self.window_size = tuple(int(v) for v in window_size)
        self.depth_tokens = int(depth_tokens)
        self.spacing_mm = tuple(float(v) for v in spacing_mm)
        self.hu_window = (float(hu_window[0]), float(hu_window[1]))
        self.scales_mm = tuple(sorted(float(s) for s in scales_mm))
        self.band_edges = tuple(float(e) for e in band_edges)
        # pooling always runs per cell of an in-plane grid; `spatial_grid` (which then is that grid) also offers
        # the cells as spatial tokens, as the histogram encoder does
        grid = cell_grid if spatial_grid is None else spatial_grid
        self.spatial_grid = (int(grid[0]), int(grid[1]))
        self.has_spatial_tokens = spatial_grid is not None
        if not self.scales_mm or any(b <= a for a, b in zip(self.band_edges, self.band_edges[1:], strict=False)):
            raise ValueError("filterbank needs at least one scale and strictly increasing band edges")
        cells = (*self.spatial_grid, self.depth_tokens)
        # per scale: the subsampling factor per axis (a power of two, grid spacing <= 4/3 sigma, dividing the cells)
        self.factors = []
        for s in self.scales_mm:
            f = []
            for w, c, h in zip(self.window_size, cells, self.spacing_mm, strict=True):
                k = 1
                while w % (c * k * 2) == 0 and h * k * 2 <= s * 4.0 / 3.0:
                    k *= 2
                if w % (c * k):
                    raise ValueError(f"window {self.window_size} does not split into {cells} cells")
                f.append(k)
            if self.factors and any(a < b for a, b in zip(f, self.factors[-1], strict=True)):
                raise ValueError("filterbank scales must not need finer grids as they grow")
            self.factors.append(tuple(f))
        self.n_shape = len(SHAPE_MEASURES) * len(self.scales_mm)
        self.n_bands = len(self.band_edges) + 1
        # per region: shape means, shape maxima, band fractions, region fraction
        self.per_region = 2 * self.n_shape + self.n_bands + 1
        self.feature_dim = self.embed_dim = len(REGIONS) * self.per_region
        # the settings as a buffer: they enter the checkpoint and the backbone hash of every feature cache, so
        # features of a filter bank with other scales, bands or spacing are never mistaken for these
        settings = [*self.spacing_mm, *self.hu_window, *self.scales_mm, *self.band_edges, *cells, LUNG_HU]
        self.register_buffer("settings", torch.tensor(settings, dtype=torch.float64))
        self._init_standardization()
        self.chunk = 2
        self.requires_grad_(False)

    def feature_names(self) -> list[str]:
        """One name per feature (region/statistic/measure), in feature order."""
        shape = [f"{m}@{s:g}mm" for s in self.scales_mm for m in SHAPE_MEASURES]
        bands = [f"band<{self.band_edges[0]:g}"] + [f"band{a:g}..{b:g}" for a, b in
                                                     zip(self.band_edges, self.band_edges[1:], strict=False)]
        bands.append(f"band>{self.band_edges[-1]:g}")
        per = [f"mean {n}" for n in shape] + [f"max {n}" for n in shape] + bands + ["fraction"]
        return [f"{r} {n}" for r in REGIONS for n in per]

    # ---- per-cell pooling -------------------------------------------------------------------------------------

    def _levels(self, hu: torch.Tensor):
        """(first grid, [(HU smoothed to each scale on its subsampled grid, its factor per axis)]). The first grid
        is a box average of the input (its blur counted), each next one the previous one blurred further and
        subsampled after the blur, so no grid is finer than its smoothing needs."""
        f0 = self.factors[0]
        base = cur = F.avg_pool3d(hu.unsqueeze(1), f0).squeeze(1) if f0 != (1, 1, 1) else hu
        var = [((k * k - 1) / 12.0) * h * h for k, h in zip(f0, self.spacing_mm, strict=True)]  # box blur, mm^2
        cur_f, levels = f0, []
        for s, f in zip(self.scales_mm, self.factors, strict=True):
            spacing = [h * b for h, b in zip(self.spacing_mm, cur_f, strict=True)]
            cur = _blur(cur, [math.sqrt(max(s * s - v, 0.0)) / sp for v, sp in zip(var, spacing, strict=True)])
            var = [s * s] * 3
            step = tuple(a // b for a, b in zip(f, cur_f, strict=True))
            if step != (1, 1, 1):
                cur = cur[:, :: step[0], :: step[1], :: step[2]].contiguous()
            cur_f = f
            levels.append((cur, f))
        return base, levels

    def _band_counts(self, base: torch.Tensor, lung: torch.Tensor) -> torch.Tensor:
        """(n, R, bands, Sh, Sw, T) voxel counts per region, HU band and cell on the first grid (one bincount);
        `lung` (n, X, Y, Z) is the lung field on that grid."""
        n, x, y, z = base.shape
        sh, sw = self.spatial_grid
        t = self.depth_tokens
        region = 1 - lung.to(torch.int64)  # 0: lung, 1: body
        cx = torch.arange(x, device=base.device) // (x // sh)
        cy = torch.arange(y, device=base.device) // (y // sw)
        cz = torch.arange(z, device=base.device) // (z // t)
        cell = (cx[:, None, None] * sw + cy[None, :, None]) * t + cz[None, None, :]
        band = torch.zeros(base.shape, dtype=torch.int64, device=base.device)
        for e in self.band_edges:  # band = number of edges at or below the voxel's HU (faster than bucketize)
            band += base >= e
        ncell, nb, r = sh * sw * t, self.n_bands, len(REGIONS)
        win = torch.arange(n, device=base.device).view(n, 1, 1, 1)
        idx = ((win * r + region) * ncell + cell) * nb + band
        counts = torch.bincount(idx.reshape(-1), minlength=n * r * ncell * nb).to(base.dtype)
        return counts.view(n, r, sh, sw, t, nb).permute(0, 1, 5, 2, 3, 4)

    def _pooled(self, windows: torch.Tensor):
        """Per region and cell: voxel counts (n, R, Sh, Sw, T), shape-measure sums and maxima (n, R, S, Sh, Sw, T)
        and band counts (n, R, bands, Sh, Sw, T); sums and counts are in voxels of the first grid."""
        lo, hi = self.hu_window
        hu = windows[:, 0].float() * (hi - lo) + lo  # (n, X, Y, Z)
        base, levels = self._levels(hu)
        f0 = self.factors[0]
        # the lung field: enclosure is decided on the coarsest grid (its largest-scale smoothed HU), the air-like
        # test per voxel of each grid on that smoothed HU interpolated to it, so the field follows the pleura and
        # the mediastinum at the grid's own resolution instead of in coarse blocks
        coarse, fc = levels[-1]
        enclosed = _enclosed(coarse >= LUNG_HU) >= 3  # (n, cx, cy, cz)

        def lung_at(shape: tuple[int, ...], f: tuple[int, int, int]) -> torch.Tensor:
            sm, inside = coarse.unsqueeze(1), enclosed.unsqueeze(1)
            if f != fc:
                sm = F.interpolate(sm, size=shape, mode="trilinear", align_corners=False)
                for axis, r in enumerate(a // b for a, b in zip(fc, f, strict=True)):
                    inside = inside.repeat_interleave(r, dim=2 + axis) if r > 1 else inside
            return ((sm < LUNG_HU) & inside).to(hu.dtype)  # (n, 1, *shape)

        bands = self._band_counts(base, lung_at(tuple(base.shape[1:]), f0)[:, 0])
        counts = bands.sum(2)
        sums, maxima = [], []
        for s, (img, f) in zip(self.scales_mm, levels, strict=True):
            meas = shape_measures(img, [h * k for h, k in zip(self.spacing_mm, f, strict=True)], s)
            ck = tuple(a // b for a, b in zip(img.shape[1:], (*self.spatial_grid, self.depth_tokens), strict=True))
            per_voxel = math.prod(a // b for a, b in zip(f, f0, strict=True))  # first-grid voxels per voxel here
            lung = meas * lung_at(tuple(img.shape[1:]), f)
            whole = _block_reduce(meas, ck, "sum").mul_(per_voxel)
            lsum = _block_reduce(lung, ck, "sum").mul_(per_voxel)
            sums.append(torch.stack([lsum, whole.sub_(lsum)], 1))  # the body is everything outside the lung field
            # measures are >= 0, so a voxel zeroed by the other region's mask never wins a max
            maxima.append(torch.stack([_block_reduce(lung, ck, "max"), _block_reduce(meas.sub_(lung), ck, "max")], 1))
        return counts, torch.cat(sums, dim=2), torch.cat(maxima, dim=2), bands

    @staticmethod
    def _features(counts, sums, maxima, band_sums, total: float) -> torch.Tensor:
        """Region features from pooled statistics (counts (n, R, *g), sums (n, R, C, *g), ...) -> (n, *g, F)."""
        c = counts.unsqueeze(2).clamp_min(1.0)
        parts = torch.cat([sums / c, maxima, band_sums / c, (counts / total).unsqueeze(2)], dim=2)
        parts = parts.clamp_min(0.0).sqrt()  # (n, R, P, *g)
        n, r, p = parts.shape[:3]
        g = parts.shape[3:]
        parts = parts.reshape(n, r * p, -1).transpose(1, 2)
        return parts.reshape(n, *g, r * p)

    def raw_features(self, windows: torch.Tensor, spatial: bool = False) -> WindowFeatures:
        """Unstandardised (square-root compressed) features; see the module doc for the layout."""
        threads = torch.get_num_threads()
        if windows.device.type == "cpu":
            # one thread: the bank is ~150 small memory-bound operations per chunk, and on a shared CPU every one
            # of them waits for the slowest of its threads (measured under load: 0.4 windows/s on 2 threads,
            # 8 on 1, the histogram encoder 10 on 2); a GPU is left alone
            torch.set_num_threads(1)
        try:
            return self._raw_features(windows, spatial)
        finally:
            torch.set_num_threads(threads)

    def _raw_features(self, windows: torch.Tensor, spatial: bool) -> WindowFeatures:
        with torch.no_grad():
            # a few windows at a time: the intermediate maps then stay in the CPU's caches (measured faster)
            chunks = [self._pooled(c) for c in windows.split(self.chunk)]
            counts, sums, maxima, bands = (torch.cat(parts) for parts in zip(*chunks, strict=True))
            cell_vox = math.prod(w // (g * f) for w, g, f in
                                 zip(self.window_size, (*self.spatial_grid, self.depth_tokens), self.factors[0],
                                     strict=True))  # fmt: skip
            grid = self._features(counts, sums, maxima, bands, float(cell_vox)) if spatial else None
            # per depth token: add the sums and counts over the in-plane cells, take the maximum of the maxima
            tok = self._features(counts.sum((2, 3)), sums.sum((3, 4)), maxima.amax((3, 4)), bands.sum((3, 4)),
                                 float(cell_vox * self.spatial_grid[0] * self.spatial_grid[1]))  # fmt: skip
            whole = self._features(counts.sum((2, 3, 4)), sums.sum((3, 4, 5)), maxima.amax((3, 4, 5)),
                                   bands.sum((3, 4, 5)), float(cell_vox * math.prod(counts.shape[2:])))
            cell = grid if grid is not None else self._features(counts, sums, maxima, bands, float(cell_vox))
            # patch_average: the region-weighted mean of the cells' features
            w = counts.unsqueeze(2).expand(-1, -1, self.per_region, -1, -1, -1)
            w = w.reshape(w.shape[0], -1, *w.shape[3:]).permute(0, 2, 3, 4, 1)  # (n, Sh, Sw, T, F)
            avg = (cell * w).sum((1, 2, 3)) / w.sum((1, 2, 3)).clamp_min(1.0)
        return WindowFeatures(cls=whole, patch_average=avg, axis2=tok, spatial=grid)




def filterbank_dim(scales: int = len(DEFAULT_SCALES_MM), bands: int = len(DEFAULT_BAND_EDGES) + 1) -> int:
    """Feature width of a filter bank with `scales` scales and `bands` HU bands."""
    return len(REGIONS) * (2 * len(SHAPE_MEASURES) * scales + bands + 1)


def _build_filterbank(cfg) -> FilterBankWindowEncoder:
    """Builder for `WindowEncoderConfig(kind="filterbank", embed_dim=filterbank_dim(), options={...})`.

    options: spacing_mm ([x, y, z] of the spec), hu_window ([low, high]), scales_mm, band_edges (HU),
    depth_tokens, cell_grid ([Sh, Sw] pooling cells, default 8 x 8), spatial_grid ([Sh, Sw]: pool on this grid
    and offer it as spatial tokens)."""
    from ..errors import ConfigError

    opts = dict(cfg.options)
    kw = {}
    for key in ("spacing_mm", "hu_window", "scales_mm", "band_edges", "spatial_grid", "cell_grid"):
        if key in opts:
            kw[key] = tuple(opts.pop(key))
    if "depth_tokens" in opts:
        kw["depth_tokens"] = int(opts.pop("depth_tokens"))
    if opts:
        raise ConfigError(f"filterbank window encoder: unknown options {sorted(opts)}")
    try:
        enc = FilterBankWindowEncoder(window_size=tuple(cfg.window_size), **kw)
    except ValueError as exc:
        raise ConfigError(f"filterbank window encoder: {exc}") from exc
    if cfg.resolved_feature_dim != enc.feature_dim:
        raise ConfigError(f"filterbank window encoder gives {enc.feature_dim}-d features; set "
                          f"window_encoder.embed_dim (or feature_dim) to {enc.feature_dim}")  # fmt: skip
    return enc


register_window_encoder("filterbank", _build_filterbank)
