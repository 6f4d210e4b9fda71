"""A tiny synthetic cohort shared by the tests/test_data_*.py modules: generated once per test session.

Seed 12 with 4 studies gives both splits, a patient with two studies and a study with two volumes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

COHORT_SEED = 12
COHORT_STUDIES = 4
_CACHE: dict[str, Path] = {}


def synth_cohort(tmp_path_factory) -> Path:
    if "cohort" not in _CACHE:
        from radfinder.data.synth import make_cohort

        out = tmp_path_factory.getbasetemp() / "data_cohort"
        make_cohort(out, COHORT_STUDIES, COHORT_SEED, workers=1, show_progress=False)
        _CACHE["cohort"] = out
    return _CACHE["cohort"]


def mirror(tmp_path_factory, kind: str) -> Path:
    """A mirror of the shared cohort in `kind`'s layout (written once per session; treat as read-only)."""
    if kind not in _CACHE:
        from radfinder.data.synth import mirrors

        cohort = synth_cohort(tmp_path_factory)
        out = tmp_path_factory.getbasetemp() / f"mirror_{kind}"
        if kind == "radchestct":
            mirrors.write_radchestct_mirror(cohort, out, spacing_mm=4.0)
        elif kind == "merlin":
            mirrors.write_merlin_mirror(cohort, out, xlsx=_has_openpyxl())
        elif kind == "inspect":
            mirrors.write_inspect_mirror(cohort, out)
        else:
            raise ValueError(kind)
        _CACHE[kind] = out
    return _CACHE[kind]


def truth(cohort: Path) -> list[dict]:
    from radfinder.data.synth.mirrors import read_truth

    return read_truth(cohort)


def _has_openpyxl() -> bool:
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        return False
    return True


def depth_cell_by_hand(affine, spec, z_mm: float) -> int:
    """Depth cell of world height `z_mm` in a preprocessed axial image with voxel->RAS `affine`, written out by hand
    (independent of `Geometry.depth_cell_of_world`, which the miner uses): the image's third axis runs along world
    z only, voxel k lies at z = affine[2, 3] + k * affine[2, 2] and covers [k - 1/2, k + 1/2); cell c holds voxels
    [c*n, (c+1)*n) with n = window depth / depth tokens per window, so z falls in cell floor((k + 1/2) / n)."""
    a = np.asarray(affine, dtype=np.float64)
    assert abs(a[2, 0]) < 1e-9 and abs(a[2, 1]) < 1e-9 and abs(a[2, 2]) > 0, "not an axial image"
    k = (z_mm - a[2, 3]) / a[2, 2]
    n = spec.window[2] // spec.depth_tokens_per_window
    return math.floor((k + 0.5) / n)


def depth_cell_bounds_by_hand(affine, spec, cell: int) -> tuple[float, float]:
    """World z extent (ascending) of depth cell `cell`: voxel edges c*n - 1/2 and (c+1)*n - 1/2 along the third
    axis, through the affine (see `depth_cell_by_hand`)."""
    a = np.asarray(affine, dtype=np.float64)
    n = spec.window[2] // spec.depth_tokens_per_window
    ends = sorted(float(a[2, 3] + v * a[2, 2]) for v in (cell * n - 0.5, (cell + 1) * n - 0.5))
    return ends[0], ends[1]
