"""Batching cached features of scans with different window grids: zero-pad to the largest grid, with a mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from .store import FeatureRecord


@dataclass
class FeatureBatch:
    """Padded window features of B scans.

    cls, patch_average: (B, Hm, Wm, Dm, E); axis2: (B, Hm, Wm, Dm, T, E); window_mask: (B, Hm, Wm, Dm) bool,
    True on real windows; grid_size: (B, 3) long, each scan's own grid; affine: (B, 4, 4) float64.
    """

    keys: list[str]
    cls: torch.Tensor
    patch_average: torch.Tensor
    axis2: torch.Tensor
    window_mask: torch.Tensor
    grid_size: torch.Tensor
    affine: torch.Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> FeatureBatch:
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v.to(device, dtype=dtype) if v.is_floating_point() and f.name != "affine" else v.to(device)
            moved[f.name] = v
        return FeatureBatch(**moved)

    @property
    def depth_cells(self) -> torch.Tensor:
        """(B,) number of valid depth cells per scan (grid depth x depth tokens per window)."""
        return self.grid_size[:, 2] * self.axis2.shape[4]

    def __len__(self) -> int:
        return len(self.keys)


def collate_features(records: Sequence[FeatureRecord]) -> FeatureBatch:
    if not records:
        raise ValueError("cannot collate an empty list of feature records")
    grids = np.array([r.grid for r in records], dtype=np.int64)
    hm, wm, dm = (int(v) for v in grids.max(axis=0))
    e = records[0].cls.shape[-1]
    t = records[0].axis2.shape[3]
    b = len(records)
    cls = np.zeros((b, hm, wm, dm, e), dtype=np.float32)
    avg = np.zeros_like(cls)
    axis2 = np.zeros((b, hm, wm, dm, t, e), dtype=np.float32)
    mask = np.zeros((b, hm, wm, dm), dtype=bool)
    for i, r in enumerate(records):
        h, w, d = r.grid
        cls[i, :h, :w, :d] = r.cls
        avg[i, :h, :w, :d] = r.patch_average
        axis2[i, :h, :w, :d] = r.axis2
        mask[i, :h, :w, :d] = True
    return FeatureBatch(
        keys=[r.key for r in records],
        cls=torch.from_numpy(cls),
        patch_average=torch.from_numpy(avg),
        axis2=torch.from_numpy(axis2),
        window_mask=torch.from_numpy(mask),
        grid_size=torch.from_numpy(grids),
        affine=torch.from_numpy(np.stack([np.asarray(r.affine, dtype=np.float64) for r in records])),
    )
