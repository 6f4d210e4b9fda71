"""Where in the volume a report's findings lie, in a frame shared across patients: the volumetric part of the swca
objective's spatial similarity (`radfinder.losses.soft_targets.VolumeProfiles`, docs/soft_contrastive.md).

Two parts per study, each a non-negative profile over fixed cells, or absent:

* organs: the voxels of the organs the report calls abnormal (organ masks of the feature cache's anatomy coverage,
  `AnatomyCoverage`, i.e. TotalSegmentator-format organ segmentations; lesion classes are never read on their own:
  the coverage counts a lesion's voxels only as part of the organ it lies in) over ORGAN_CELLS cells of the box
  around all the study's segmented organs (its thorax content), so that studies of different size and position
  share the frame;
* cited: the depth cells the report cites (mined image references, `pairs.jsonl`) over CITED_BINS bins of the same
  box's depth extent (of the whole depth-cell range when the study has no segmentation).

Neither part reads a lesion mask or a ground-truth label; which organs are abnormal comes from the report text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .store import AnatomyCoverage

ORGAN_CELLS = (2, 2, 6)  # cells of the organ box along the preprocessed grid's axes (x, y, depth)
CITED_BINS = ORGAN_CELLS[2]
PROFILE_WIDTH = 2 + int(np.prod(ORGAN_CELLS)) + CITED_BINS  # [has_organs, has_cited, organs..., cited...]


def token_volume(cov: AnatomyCoverage) -> np.ndarray:
    """(X, Y, Z, A) coverage on the full token grid (X = Hg * Sh, Y = Wg * Sw, Z = Dg * T)."""
    c = np.asarray(cov.coverage, dtype=np.float64)  # (Hg, Wg, Dg, Sh, Sw, T, A)
    hg, wg, dg, sh, sw, t, a = c.shape
    return c.transpose(0, 3, 1, 4, 2, 5, 6).reshape(hg * sh, wg * sw, dg * t, a)


def organ_box(vol: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(lo, hi) token indices (inclusive lo, exclusive hi) per axis of the box around every organ, None if empty."""
    occupied = vol.sum(-1) > 0
    if not occupied.any():
        return None
    idx = np.argwhere(occupied)
    return idx.min(0), idx.max(0) + 1


def _cell_of(pos: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    """Cell (0..n-1) of positions (token units, centres) in [lo, hi); positions outside go to the end cells."""
    u = (pos - lo) / max(hi - lo, 1e-9)
    return np.clip(np.floor(u * n).astype(np.int64), 0, n - 1)


def organ_profile(cov: AnatomyCoverage, abnormal: Iterable[str]) -> np.ndarray | None:
    """(prod(ORGAN_CELLS),) voxels (in token units) of the organs `abnormal` per cell of the organ box; None when the
    study has no segmented organ or none of `abnormal` has voxels."""
    names = [a for a in abnormal if a in cov.names]
    if not names:
        return None
    vol = token_volume(cov)
    box = organ_box(vol)
    if box is None:
        return None
    lo, hi = box
    occ = vol[..., [cov.names.index(a) for a in names]].sum(-1)
    if occ.sum() <= 0:
        return None
    cells = [_cell_of(np.arange(vol.shape[k]) + 0.5, lo[k], hi[k], ORGAN_CELLS[k]) for k in range(3)]
    out = np.zeros(ORGAN_CELLS)
    np.add.at(out, np.ix_(cells[0], cells[1], cells[2]), occ)
    return out.reshape(-1)


def cited_profile(cells: Sequence[int], n_depth_cells: int, cov: AnatomyCoverage | None = None) -> np.ndarray | None:
    """(CITED_BINS,) count of cited depth cells per depth bin of the organ box (of [0, n_depth_cells) without a
    segmentation); None without citations."""
    cells = [int(c) for c in cells]
    if not cells or n_depth_cells <= 0:
        return None
    lo, hi = 0.0, float(n_depth_cells)
    scale = 1.0
    if cov is not None:
        vol = token_volume(cov)
        box = organ_box(vol)
        if box is not None:
            scale = vol.shape[2] / float(n_depth_cells)  # depth cells -> depth tokens (equal in practice)
            lo, hi = float(box[0][2]), float(box[1][2])
    pos = (np.asarray(cells, np.float64) + 0.5) * scale
    out = np.zeros(CITED_BINS)
    np.add.at(out, _cell_of(pos, lo, hi, CITED_BINS), 1.0)
    return out


def volume_profile_row(organs: np.ndarray | None, cited: np.ndarray | None) -> np.ndarray:
    """One study's (PROFILE_WIDTH,) row: the two presence flags, then the organ cells, then the cited bins."""
    row = np.zeros(PROFILE_WIDTH)
    g = int(np.prod(ORGAN_CELLS))
    if organs is not None:
        row[0] = 1.0
        row[2 : 2 + g] = organs
    if cited is not None:
        row[1] = 1.0
        row[2 + g :] = cited
    return row


def split_profile_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(organs, has_organs, cited, has_cited) of (N, PROFILE_WIDTH) rows."""
    r = np.asarray(rows, np.float64)
    g = int(np.prod(ORGAN_CELLS))
    return r[:, 2 : 2 + g], r[:, 0] > 0, r[:, 2 + g :], r[:, 1] > 0
