"""Writing inference results: embedding archives, readable tables, localization figures (used by the CLI)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .classify import FindingScore
from .encode import VolumeEncoding
from .localize import SentenceLocation


def save_embeddings(
    path: str | Path,
    names: Sequence[str],
    encodings: Sequence[VolumeEncoding],
    texts: Sequence[str] = (),
    text_embeddings: np.ndarray | None = None,
) -> Path:
    """One .npz with, for N scans (depth arrays padded to the largest C; padded cells are invalid / NaN):
    scans (N,), retrieval (N, P), disease (N, P), depth (N, C, P), depth_valid (N, C), depth_z_mm (N, C),
    grid (N, 3), spec_hash; with texts also texts (T,) and text (T, P)."""
    from ..preprocess.cache import atomic_write_bytes

    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"--out must end in .npz, got {path}")
    n, c = len(encodings), max(e.n_depth_cells for e in encodings)
    p = encodings[0].retrieval.shape[0]
    depth = np.zeros((n, c, p), dtype=np.float32)
    valid = np.zeros((n, c), dtype=bool)
    z = np.full((n, c), np.nan, dtype=np.float64)
    for i, e in enumerate(encodings):
        depth[i, : e.n_depth_cells] = e.depth
        valid[i, : e.n_depth_cells] = e.depth_valid
        z[i, : e.n_depth_cells] = e.depth_z_mm
    arrays = {
        "scans": np.asarray(list(names)),
        "retrieval": np.stack([e.retrieval for e in encodings]),
        "disease": np.stack([e.disease for e in encodings]),
        "depth": depth,
        "depth_valid": valid,
        "depth_z_mm": z,
        "grid": np.asarray([e.grid for e in encodings], dtype=np.int64),
        "spec_hash": np.asarray(encodings[0].spec_hash),
    }
    if texts:
        arrays["texts"] = np.asarray(list(texts))
        arrays["text"] = np.asarray(text_embeddings, dtype=np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return path


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from ..eval._common import l2_normalize

    return l2_normalize(np.asarray(a, np.float64)) @ l2_normalize(np.asarray(b, np.float64)).T


def scores_table(scores: Sequence[FindingScore]) -> str:
    width = max(len("finding"), *(len(s.finding) for s in scores))
    lines = [f"{'finding':<{width}}  {'p(present)':>10}  {'margin':>8}", "-" * (width + 22)]
    lines += [f"{s.finding:<{width}}  {s.probability:>10.4f}  {s.margin:>+8.4f}" for s in scores]
    if scores and not scores[0].calibrated:
        lines.append("(uncalibrated: sigmoid of the margin; `radfinder calibrate` fits per-finding probabilities)")
    return "\n".join(lines)


def locations_table(locations: Sequence[SentenceLocation]) -> str:
    lines = []
    for loc in locations:
        inst = f", DICOM InstanceNumber {loc.instance_number}" if loc.instance_number is not None else ""
        lines.append(
            f"“{loc.sentence}”\n  depth cell {loc.cell} (p = {loc.probability:.3f}), z = {loc.world_z_mm:.1f} mm "
            f"[{loc.cell_bounds_mm[0]:.1f}, {loc.cell_bounds_mm[1]:.1f}]; nearest original slice: index "
            f"{loc.slice_index} on axis {loc.slice_axis} (z = {loc.slice_z_mm:.1f} mm){inst}"
        )
    return "\n".join(lines)


def png_paths(path: str | Path, n: int) -> list[Path]:
    """FILE for one sentence; FILE_1, FILE_2, ... (same suffix) for several."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--png must end in .png, got {path}")
    if n == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i + 1}{path.suffix}") for i in range(n)]


def plot_locations(volume, encoding: VolumeEncoding, locations: Sequence[SentenceLocation], path, scan_id=""):
    """A coronal view of the scan beside each sentence's depth profile (`eval.grounding.plot_grounding_example`)."""
    from ..eval.grounding import plot_grounding_example

    cell_mm = float(encoding.depth_bounds_mm[0, 1] - encoding.depth_bounds_mm[0, 0])
    out = []
    for loc, p in zip(locations, png_paths(path, len(locations)), strict=True):
        keep = encoding.depth_valid
        out.append(plot_grounding_example(
            volume.array, volume.affine, loc.probabilities[keep], p, cell_centers_z_mm=loc.cell_z_mm[keep],
            cell_mm=cell_mm, snippet=loc.sentence, scan_id=scan_id, view="coronal",
        ))  # fmt: skip
    return out
