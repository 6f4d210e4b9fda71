"""Per-channel statistics of cached window features (for standardising what a combiner sees)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from .store import FeatureStore

FEATURE_FIELDS = ("cls", "patch_average", "axis2")


def feature_statistics(store: FeatureStore, keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """Mean and standard deviation per channel of cls, patch_average and axis2 over every window (and depth
    token) of the scans `keys` (use the training split only). Streams in float64, one scan at a time."""
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(FEATURE_FIELDS, 0)
    n_scans = 0
    for key in keys:
        rec = store.read(key)
        n_scans += 1
        for name in FEATURE_FIELDS:
            x = np.asarray(getattr(rec, name), dtype=np.float64).reshape(-1, store.feature_dim)
            sums[name] = sums.get(name, 0.0) + x.sum(0)
            squares[name] = squares.get(name, 0.0) + (x * x).sum(0)
            counts[name] += x.shape[0]
    if not n_scans:
        raise ValueError("feature_statistics needs at least one scan")
    out: dict[str, torch.Tensor] = {}
    for name in FEATURE_FIELDS:
        mean = sums[name] / counts[name]
        var = np.maximum(squares[name] / counts[name] - mean * mean, 0.0)
        out[f"{name}_mean"] = torch.from_numpy(mean).float()
        out[f"{name}_std"] = torch.from_numpy(np.sqrt(var)).float()
    return out
