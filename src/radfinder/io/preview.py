"""Three-plane PNG preview of a `Volume` (axial, coronal, sagittal through the centre) for eyeballing a read.

Display conventions (radiological): axial and coronal show the patient's Right on the viewer's left; axial has
Anterior up, coronal and sagittal Superior up, sagittal Anterior on the left. Each panel keeps the physical
aspect ratio from the voxel spacing. The volume is first turned to the nearest RAS axes, so a tilted or oblique
acquisition is shown in its closest anatomical planes (noted in the title).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .volume import Volume

DEFAULT_WINDOW = (-1000.0, 1000.0)


def _to_ras(vol: Volume) -> tuple[np.ndarray, np.ndarray, bool]:
    """Array permuted/flipped to RAS axis order, its per-axis spacing, and whether the affine was oblique."""
    import nibabel.orientations as nio

    ornt = nio.io_orientation(vol.affine)
    transform = nio.ornt_transform(ornt, nio.axcodes2ornt("RAS"))
    arr = nio.apply_orientation(vol.array, transform)
    spacing = np.array(vol.spacing)[ornt[:, 0].argsort()]
    # io_orientation gives for each array axis the world axis it is closest to; argsort inverts that map.
    directions = vol.affine[:3, :3] / np.array(vol.spacing)
    oblique = bool(np.abs(np.abs(directions).max(axis=0) - 1).max() > 1e-3)
    return arr, spacing, oblique


@dataclass
class Panel:
    """One preview plane as displayed: ``image[0]`` is the bottom row, ``image[:, 0]`` the viewer's left column."""

    name: str
    image: np.ndarray
    width_mm: float
    height_mm: float
    labels: tuple[str, str, str, str]  # viewer's left, right, top, bottom
    where: str


def preview_panels(vol: Volume) -> tuple[list[Panel], bool]:
    """Axial, coronal and sagittal planes through the centre, oriented for display; and whether it was oblique."""
    arr, (sx, sy, sz), oblique = _to_ras(vol)
    nx, ny, nz = arr.shape
    cx, cy, cz = nx // 2, ny // 2, nz // 2
    # Flipping columns puts patient Right (axial/coronal) or Anterior (sagittal) on the viewer's left.
    panels = [
        Panel("axial", arr[:, :, cz].T[:, ::-1], nx * sx, ny * sy, ("R", "L", "A", "P"), f"z={cz}"),
        Panel("coronal", arr[:, cy, :].T[:, ::-1], nx * sx, nz * sz, ("R", "L", "S", "I"), f"y={cy}"),
        Panel("sagittal", arr[cx, :, :].T[:, ::-1], ny * sy, nz * sz, ("A", "P", "S", "I"), f"x={cx}"),
    ]
    return panels, oblique


def render_preview(
    vol: Volume,
    out_path: str | Path,
    *,
    window: tuple[float, float] = DEFAULT_WINDOW,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Write the three-plane preview PNG to `out_path` (parent folders created) and return the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"window must be (low, high) with high > low, got {window}")
    panels, oblique = preview_panels(vol)
    height_mm = max(p.height_mm for p in panels)
    widths = [p.width_mm for p in panels]
    fig = Figure(figsize=(3.2 * sum(widths) / height_mm + 0.6, 4.2), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": widths})
    for ax, panel in zip(axes, panels, strict=True):
        img, w, h, (left, right, top, bottom) = panel.image, panel.width_mm, panel.height_mm, panel.labels
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower", extent=(0, w, 0, h), interpolation="bilinear")
        ax.set_xlim(0, w)
        ax.set_ylim(0, h)
        ax.set_aspect("equal")
        ax.set_axis_off()
        style = {"color": "yellow", "fontsize": 10, "fontweight": "bold"}
        ax.text(0.02, 0.5, left, transform=ax.transAxes, ha="left", va="center", **style)
        ax.text(0.98, 0.5, right, transform=ax.transAxes, ha="right", va="center", **style)
        ax.text(0.5, 0.98, top, transform=ax.transAxes, ha="center", va="top", **style)
        ax.text(0.5, 0.02, bottom, transform=ax.transAxes, ha="center", va="bottom", **style)
        ax.set_title(f"{panel.name} ({panel.where})", color="white", fontsize=9)
    src = Path(str(vol.meta.get("source", ""))).name
    head = title or src
    sp = ", ".join(f"{s:.2f}" for s in vol.spacing)
    note = "  [oblique: nearest anatomical planes]" if oblique else ""
    fig.suptitle(
        f"{head}  {'x'.join(map(str, vol.shape))}  {vol.orientation}  spacing {sp} mm  window [{lo:g}, {hi:g}] HU"
        + note,
        color="white",
        fontsize=9,
    )
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.86, wspace=0.04)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, facecolor="black")
    return out
