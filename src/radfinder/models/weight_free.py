"""The weight-free frozen window encoders by name, as `WindowEncoderConfig` dicts (demo, fVLM, linear probe).

"histogram" (regional HU histograms), "filterbank" (multi-scale Hessian shape measures and HU bands in a lung
field and outside it, `filterbank.py`) and "histogram+filterbank" (both side by side through `concat`). None has
trained weights; each standardises its features on training windows (`fit_standardization`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .filterbank import filterbank_dim
from .histogram import DEFAULT_HU_EDGES

WEIGHT_FREE_ENCODERS = ("histogram", "filterbank", "histogram+filterbank")
HISTOGRAM_DIM = 4 * (len(DEFAULT_HU_EDGES) + 1)


def weight_free_config(
    name: str,
    *,
    spacing_mm: Sequence[float] | None = None,
    spatial_grid: Sequence[int] | None = None,
    window_size: Sequence[int] | None = None,
) -> dict[str, Any]:
    """`WindowEncoderConfig` fields of encoder `name`; `spacing_mm` is the preprocessing spec's voxel size (the
    filter bank's scales are in mm), `spatial_grid` ([Sh, Sw]) asks for spatial tokens."""
    if name not in WEIGHT_FREE_ENCODERS:
        raise ValueError(f"weight-free encoder must be one of {', '.join(WEIGHT_FREE_ENCODERS)}, got {name!r}")
    hist: dict[str, Any] = {"kind": "histogram", "embed_dim": HISTOGRAM_DIM, "options": {}}
    fb: dict[str, Any] = {"kind": "filterbank", "embed_dim": filterbank_dim(), "options": {}}
    if spacing_mm is not None:
        fb["options"]["spacing_mm"] = [float(v) for v in spacing_mm]
    if spatial_grid is not None:
        for part in (hist, fb):
            part["options"]["spatial_grid"] = [int(v) for v in spatial_grid]
    if name == "histogram":
        cfg = hist
    elif name == "filterbank":
        cfg = fb
    else:
        cfg = {"kind": "concat", "embed_dim": hist["embed_dim"] + fb["embed_dim"], "options": {"parts": [hist, fb]}}
    if window_size is not None:
        cfg["window_size"] = [int(v) for v in window_size]
    return cfg
