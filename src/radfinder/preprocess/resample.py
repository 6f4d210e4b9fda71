"""Voxel work of `apply_spec`: intensity mapping and trilinear / nearest resampling into a preallocated output.

Exactness: the official transform maps HU to [0, 1] in float32, then resamples in **float64** (MONAI Spacing's
default dtype) and returns float32, which is then cast to float16. We do the same arithmetic: the float32
intensity values come from a lookup table (integer input) or float32 math, every interpolation runs in float64,
and the result is rounded float64 -> float32 -> float16 (the same double rounding). Reordering float64 sums moves
a value by ~1e-16, so the float32 result only differs where a value sits within that of a float32 rounding tie.

Speed and memory: for axis-aligned volumes trilinear interpolation is separable, so the output is produced in
slabs along the source's slowest memory axis (the slice axis for NIfTI's Fortran order): each slab reads the few
contiguous source planes it needs, interpolates along the slab axis first, then along the other two. Only the
voxels that survive the centre crop are computed, temporaries stay near 16 MB, and no float copy of the whole
input is ever made.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .spec import PreprocessSpec


def intensity_f32(values: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HU -> spec output range in float32, in the official operation order ((x - a) / (b - a) * (d - c) + c)."""
    x = np.asarray(values, dtype=np.float32)
    a_min, a_max = spec.hu_window
    b_min, b_max = spec.out_range
    x = (x - np.float32(a_min)) / np.float32(a_max - a_min)
    x = x * np.float32(b_max - b_min) + np.float32(b_min)
    if spec.clip:
        np.clip(x, np.float32(min(b_min, b_max)), np.float32(max(b_min, b_max)), out=x)
    return x


class ValueMap:
    """Turns gathered source voxels into the float64 values that are interpolated.

    For integer inputs of at most 16 bits it is one table lookup per voxel (exact: the table holds precisely the
    float32 values the official float32 math gives); otherwise it is the float32 math on the gathered block.
    """

    def __init__(self, dtype: np.dtype, spec: PreprocessSpec, apply_intensity: bool):
        self.dtype = np.dtype(dtype)
        self.spec = spec
        self.apply_intensity = apply_intensity
        self.lut: np.ndarray | None = None
        self.as_unsigned = False
        if self.dtype.kind in "iub" and self.dtype.itemsize <= 2:
            info = np.iinfo(self.dtype) if self.dtype.kind != "b" else None
            lo, hi = (0, 1) if info is None else (int(info.min), int(info.max))
            hu = np.arange(lo, hi + 1, dtype=np.float32)
            vals = (intensity_f32(hu, spec) if apply_intensity else hu).astype(np.float64)
            if self.dtype.kind == "i":
                # Index with the unsigned view of the same bits (no index conversion or offset pass):
                # entries for 0..max first, then min..-1, as two's complement orders them.
                vals = np.concatenate([vals[-lo:], vals[:-lo]])
                self.as_unsigned = True
            self.lut = vals

    def __call__(self, block: np.ndarray) -> np.ndarray:
        if self.lut is not None:
            if self.as_unsigned:
                block = block.view(np.dtype(f"u{self.dtype.itemsize}"))
            return self.lut[block]
        vals = np.asarray(block, dtype=np.float32)  # the official loader reads voxels as float32
        if self.apply_intensity:
            vals = intensity_f32(vals, self.spec)
        return vals.astype(np.float64)


def axis_table(n_in: int, ratio: float, lo: int, hi: int, nearest: bool):
    """Source indices and weights for output indices [lo, hi) along one axis.

    Output i samples source coordinate i * ratio (ratio = s_out / s_in), clamped to [0, n_in - 1].
    Returns (i0, i1, w) with value = v[i0] + w * (v[i1] - v[i0]); nearest uses w = 0 and i0 = i1.
    """
    c = np.arange(lo, hi, dtype=np.float64) * ratio
    np.clip(c, 0.0, n_in - 1, out=c)
    if nearest:
        i0 = np.rint(c).astype(np.intp)  # ties to even, as torch's nearest sampling
        return i0, i0, np.zeros_like(c)
    i0 = np.floor(c).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, c - i0


def _lerp(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    # a + w * (b - a) is exactly a at w = 0, so voxels that land on source centres keep their value.
    b -= a
    b *= w
    b += a
    return b


def _lerp_axis(x: np.ndarray, axis: int, i0: np.ndarray, i1: np.ndarray, w: np.ndarray) -> np.ndarray:
    a = np.take(x, i0, axis=axis)
    if np.array_equal(i0, i1):
        return a
    shape = [1, 1, 1]
    shape[axis] = len(w)
    return _lerp(a, np.take(x, i1, axis=axis), w.reshape(shape))


def resample_separable(
    src: np.ndarray,
    ratios: tuple[float, float, float],
    out_box: tuple[tuple[int, int], ...],
    out: np.ndarray,
    out_offset: tuple[int, int, int],
    values: ValueMap,
    finish: Callable[[np.ndarray], np.ndarray],
    nearest: bool,
) -> None:
    """Resample axis-aligned `src` (already reoriented; any strides) into `out`.

    out_box: per axis [lo, hi) of spaced-grid indices to compute; they are written at
    out[lo - off : hi - off] for the offsets `out_offset` (the crop start).
    finish: float64 interpolated block -> values stored (intensity-after, float32 rounding).
    """
    if any(hi <= lo for lo, hi in out_box):
        return
    # Work in memory order (slowest axis first): slabs along the slowest axis read whole contiguous planes,
    # which matters for NIfTI's Fortran-ordered arrays where the slice axis is the slowest.
    perm = [int(a) for a in np.argsort([-abs(st) for st in src.strides], kind="stable")]
    src_t = src.transpose(perm)
    out_t = out.transpose(perm)
    box = [out_box[a] for a in perm]
    off = [out_offset[a] for a in perm]
    tabs = [axis_table(src.shape[a], ratios[a], *out_box[a], nearest) for a in perm]
    (r0, r1, rw), (j0, j1, jw), (k0, k1, kw) = tabs
    # Axes 1 and 2 are read as one slice spanning every source index they need.
    j_lo, j_hi = int(j0.min()), int(j1.max()) + 1
    k_lo, k_hi = int(k0.min()), int(k1.max()) + 1
    j0, j1, k0, k1 = j0 - j_lo, j1 - j_lo, k0 - k_lo, k1 - k_lo
    plane = (j_hi - j_lo) * (k_hi - k_lo)
    # Output rows per slab: keep the float64 temporaries near 2M values (16 MB) each.
    rows = max(1, min(box[0][1] - box[0][0], (1 << 21) // max(1, 2 * plane)))
    n0 = box[0][1] - box[0][0]
    for s in range(0, n0, rows):
        e = min(s + rows, n0)
        ra, rb, w = r0[s:e], r1[s:e], rw[s:e]
        lo = int(ra.min())
        blk = src_t[lo : int(rb.max()) + 1, j_lo:j_hi, k_lo:k_hi]
        v = values(blk[ra - lo])
        if not np.array_equal(ra, rb):
            v = _lerp(v, values(blk[rb - lo]), w[:, None, None])
        v = _lerp_axis(v, 1, j0, j1, jw)
        v = _lerp_axis(v, 2, k0, k1, kw)
        out_t[
            box[0][0] + s - off[0] : box[0][0] + e - off[0],
            box[1][0] - off[1] : box[1][1] - off[1],
            box[2][0] - off[2] : box[2][1] - off[2],
        ] = finish(v)


def resample_world(
    src: np.ndarray,
    src_affine: np.ndarray,
    out_affine: np.ndarray,
    out_box: tuple[tuple[int, int], ...],
    out: np.ndarray,
    out_offset: tuple[int, int, int],
    values: ValueMap,
    finish: Callable[[np.ndarray], np.ndarray],
    nearest: bool,
) -> None:
    """General (oblique) resampling: each output voxel's world position is mapped into the source voxel grid and
    interpolated trilinearly from its 8 neighbours, coordinates clamped to the source edge."""
    (h0, h1), (w0, w1), (d0, d1) = out_box
    if h1 <= h0 or w1 <= w0 or d1 <= d0:
        return
    m = np.linalg.inv(src_affine) @ out_affine  # spaced voxel -> source voxel
    n = np.array(src.shape)
    jj, kk = np.meshgrid(np.arange(w0, w1, dtype=np.float64), np.arange(d0, d1, dtype=np.float64), indexing="ij")
    plane = jj[..., None] * m[:3, 1] + kk[..., None] * m[:3, 2] + m[:3, 3]  # (W, D, 3)
    oh, ow, od = out_offset
    for i in range(h0, h1):
        c = plane + i * m[:3, 0]
        np.clip(c, 0.0, n - 1, out=c)
        if nearest:
            idx = np.rint(c).astype(np.intp)
            res = values(src[idx[..., 0], idx[..., 1], idx[..., 2]])
        else:
            f = np.floor(c)
            t = c - f
            i0 = f.astype(np.intp)
            i1 = np.minimum(i0 + 1, n - 1)
            res = np.zeros(c.shape[:2])
            for corner in range(8):
                sel = [(corner >> (2 - ax)) & 1 for ax in range(3)]
                ix = [i1[..., ax] if sel[ax] else i0[..., ax] for ax in range(3)]
                wt = np.ones(c.shape[:2])
                for ax in range(3):
                    wt *= t[..., ax] if sel[ax] else 1.0 - t[..., ax]
                res += wt * values(src[ix[0], ix[1], ix[2]])
        out[i - oh, w0 - ow : w1 - ow, d0 - od : d1 - od] = finish(res[None])[0]
