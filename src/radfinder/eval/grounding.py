"""Grounding example figure: a coronal or sagittal view of a scan beside a snippet's predicted depth profile.

Inputs are plain arrays so any caller (demo, evaluate) can supply them:
- `volume` (I, J, K) voxels (HU or any intensity) and `affine` (4, 4) voxel index -> RAS+ world mm (the
  `radfinder.io.volume.Volume` convention). The array is brought to the nearest RAS axis order by permuting and
  flipping axes (no resampling; oblique scans are shown as if axis-aligned).
- `depth_probs` (n_cells,): predicted probability per depth cell (e.g. softmax over the valid cells).
- `cell_centers_z_mm` (n_cells,): world z (superior +) of each cell's centre. Default: cells of `cell_mm` tiling
  upward from the lowest voxel centre of the scan.
- the truth as `true_world_z_mm` (world z) or `true_cell` (index into the cells).

Display: superior up; coronal in radiological convention (patient right on the viewer's left); sagittal with
anterior on the left.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from radfinder.eval._common import EvalInputError, as_numpy  # noqa: E402


def to_ras_grid(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(array in x, y, z order with increasing R, A, S; spacing (3,); world coordinate of index (0, 0, 0))."""
    vol = np.asarray(volume)
    aff = np.asarray(affine, dtype=np.float64)
    if vol.ndim != 3 or aff.shape != (4, 4):
        raise EvalInputError(f"need a 3D volume and a 4x4 affine, got {vol.shape} and {aff.shape}")
    rot = aff[:3, :3]
    world_axis = np.argmax(np.abs(rot), axis=0)  # world axis each array axis runs along
    if sorted(world_axis.tolist()) != [0, 1, 2]:
        raise EvalInputError("affine does not map the array axes to three distinct world axes")
    perm = [int(np.flatnonzero(world_axis == w)[0]) for w in range(3)]
    out = np.transpose(vol, perm)
    spacing = np.linalg.norm(rot, axis=0)[perm]
    for w, a in enumerate(perm):
        if rot[w, a] < 0:
            out = np.flip(out, axis=w)
    corners = np.array(
        [[i, j, k] for i in (0, vol.shape[0] - 1) for j in (0, vol.shape[1] - 1) for k in (0, vol.shape[2] - 1)],
        dtype=np.float64,
    )
    world = corners @ rot.T + aff[:3, 3]
    return out, spacing, world.min(axis=0)


def plot_grounding_example(
    volume: Any,
    affine: Any,
    depth_probs: Any,
    path: str | Path,
    *,
    true_world_z_mm: float | None = None,
    true_cell: int | None = None,
    cell_centers_z_mm: Any = None,
    cell_mm: float = 12.0,
    snippet: str = "",
    scan_id: str = "",
    view: str = "coronal",
    slice_mm: float | None = None,
    window: tuple[float, float] | None = (-1000.0, 600.0),
) -> Path:
    """Write the figure to `path`. `slice_mm`: world y (coronal) or x (sagittal) of the shown slice; default the
    middle of the scan. `window`: display range of the intensities (None: 1st-99th percentile)."""
    vol, sp, origin = to_ras_grid(as_numpy(volume, dtype=np.float32, name="volume"), as_numpy(affine, name="affine"))
    probs = as_numpy(depth_probs, name="depth_probs").ravel()
    if probs.size == 0:
        raise EvalInputError("depth_probs is empty")
    if cell_centers_z_mm is None:
        centers = origin[2] + (np.arange(probs.size) + 0.5) * cell_mm
    else:
        centers = as_numpy(cell_centers_z_mm, name="cell_centers_z_mm").ravel()
        if centers.size != probs.size:
            raise EvalInputError(f"{centers.size} cell centres for {probs.size} depth probabilities")
    if true_world_z_mm is None and true_cell is not None:
        true_world_z_mm = float(centers[int(true_cell)])
    if view == "coronal":
        axis, h_world, h_label = 1, 0, "x (mm)   patient right ◄ ► left"
    elif view == "sagittal":
        axis, h_world, h_label = 0, 1, "y (mm)   anterior ◄ ► posterior"
    else:
        raise EvalInputError(f"view must be 'coronal' or 'sagittal', got {view!r}")
    n_ax = vol.shape[axis]
    idx = n_ax // 2 if slice_mm is None else int(np.clip(round((slice_mm - origin[axis]) / sp[axis]), 0, n_ax - 1))
    img = np.take(vol, idx, axis=axis)  # (horizontal world axis, z)
    h0, z0 = origin[h_world], origin[2]
    h1 = h0 + (img.shape[0] - 1) * sp[h_world]
    z1 = z0 + (img.shape[1] - 1) * sp[2]
    lo, hi = window if window is not None else np.percentile(img, [1, 99])

    # exact physical aspect: the image panel's size in inches is proportional to its extent in mm
    h_range = h1 - h0 + sp[h_world]
    z_range = max(z1, centers.max() + cell_mm / 2) - min(z0, centers.min() - cell_mm / 2) + sp[2]
    panel_h = 5.2
    panel_w = panel_h * h_range / z_range
    if panel_w > 7.0:
        panel_w, panel_h = 7.0, 7.0 * z_range / h_range
    left, gap, prof_w, right, bottom, top = 0.85, 0.12, 2.1, 0.2, 0.75, 0.95
    fig_w, fig_h = left + panel_w + gap + prof_w + right, bottom + panel_h + top
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax_img = fig.add_axes((left / fig_w, bottom / fig_h, panel_w / fig_w, panel_h / fig_h))
    ax_p = fig.add_axes(
        ((left + panel_w + gap) / fig_w, bottom / fig_h, prof_w / fig_w, panel_h / fig_h), sharey=ax_img
    )
    ax_p.tick_params(labelleft=False)
    ext = (h0 - sp[h_world] / 2, h1 + sp[h_world] / 2, z0 - sp[2] / 2, z1 + sp[2] / 2)
    ax_img.imshow(
        img.T, cmap="gray", origin="lower", extent=ext, vmin=lo, vmax=hi, aspect="auto", interpolation="bilinear"
    )
    ax_img.invert_xaxis()  # coronal: patient right (high x) on the left; sagittal: anterior (high y) on the left
    ax_img.set_xlabel(h_label, fontsize=8)
    ax_img.set_ylabel("z (mm, superior ↑)")
    ax_img.set_title(
        f"{view} slice at {'y' if view == 'coronal' else 'x'} = {origin[axis] + idx * sp[axis]:.0f} mm", fontsize=9
    )

    pred_z = float(centers[int(np.argmax(probs))])
    ax_p.barh(centers, probs, height=cell_mm * 0.9, color="#1f77b4", alpha=0.85, label="p(cell)")
    ax_p.set_xlabel(f"predicted probability\n({cell_mm:g} mm depth cells)", fontsize=8)
    ax_p.set_xlim(0, max(float(probs.max()) * 1.15, 1e-6))
    ax_p.grid(axis="x", alpha=0.3)
    for ax in (ax_img, ax_p):
        ax.axhline(pred_z, color="#ff7f0e", ls="--", lw=1.6)
        if true_world_z_mm is not None:
            ax.axhline(true_world_z_mm, color="#2ca02c", lw=1.8)
    ax_p.plot([], [], color="#ff7f0e", ls="--", label=f"prediction (z = {pred_z:.0f} mm)")
    if true_world_z_mm is not None:
        ax_p.plot([], [], color="#2ca02c", label=f"true depth (z = {true_world_z_mm:.0f} mm)")
    ax_p.legend(fontsize=7, loc="upper right", framealpha=0.9)
    ax_img.set_ylim(min(ext[2], centers.min() - cell_mm / 2), max(ext[3], centers.max() + cell_mm / 2))
    head = f"{scan_id}: " if scan_id else ""
    wrapped = textwrap.fill(f"{head}“{snippet}”", 90) if snippet else head.rstrip(": ")
    if true_world_z_mm is not None:
        wrapped += f"\nerror {abs(pred_z - true_world_z_mm):.0f} mm"
    fig.text(0.5, 1 - 0.12 / fig_h, wrapped, ha="center", va="top", fontsize=9)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, facecolor="white")
    plt.close(fig)
    return Path(path)
