"""PNG galleries: axial and coronal slices through each lesion centre, labelled, in a window that suits it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .lesion import Lesion
from .render import ScanGeometry

_LUNG = {
    "Emphysema",
    "Lung nodule",
    "Lung opacity",
    "Mosaic attenuation pattern",
    "Interlobular septal thickening",
    "Pulmonary fibrotic sequela",
    "Bronchiectasis",
    "Peribronchial thickening",
    "Atelectasis",
    "Consolidation",
}


def study_gallery(
    thin: np.ndarray, g: ScanGeometry, lesions: list[Lesion], path: Path, title: str = "", max_lesions: int = 8
) -> Path:
    """One row per lesion (axial | coronal) in radiological display: patient right on the image left,
    anterior up (axial), head up (coronal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = lesions[:max_lesions]
    rows = max(1, len(shown))
    fig, axes = plt.subplots(rows, 2, figsize=(7.5, 3.4 * rows), squeeze=False)
    dz = float(g.zs_thin[1] - g.zs_thin[0])
    # Array axis 0 runs to patient left and axis 1 to posterior, so .T shows right-on-left, anterior-up as is.
    extent_ax = (0, thin.shape[0] * g.dx, thin.shape[1] * g.dx, 0)
    extent_co = (0, thin.shape[0] * g.dx, 0, thin.shape[2] * dz)
    if not shown:
        k = thin.shape[2] // 2
        axes[0, 0].imshow(thin[:, :, k].T, cmap="gray", vmin=-1000, vmax=300, extent=extent_ax)
        axes[0, 0].set_title("no findings", fontsize=8)
        j = thin.shape[1] // 2
        axes[0, 1].imshow(thin[:, j, :].T, cmap="gray", vmin=-1000, vmax=300, origin="lower", extent=extent_co)
    for row, les in zip(axes, shown, strict=False):
        i = int(np.argmin(np.abs(g.xs - les.center[0])))
        j = int(np.argmin(np.abs(g.ys - les.center[1])))
        k = int(np.argmin(np.abs(g.zs_thin - les.center[2])))
        lo, hi = (-1200, 200) if les.finding in _LUNG else (-250, 450)
        if les.finding in ("Arterial wall calcification", "Coronary artery wall calcification", "Medical material"):
            lo, hi = -400, 1200
        px, py, pz = i * g.dx, j * g.dx, k * dz
        row[0].imshow(thin[:, :, k].T, cmap="gray", vmin=lo, vmax=hi, extent=extent_ax)
        row[0].plot(px, py, marker="o", ms=18, mfc="none", mec="red", mew=1.2)
        row[1].imshow(thin[:, j, :].T, cmap="gray", vmin=lo, vmax=hi, origin="lower", extent=extent_co)
        row[1].plot(px, pz, marker="o", ms=18, mfc="none", mec="red", mew=1.2)
        where = f", {les.location}" if les.location else ""
        size = f", {les.size_mm:.0f} mm" if les.size_mm else ""
        row[0].set_title(f"{les.finding}{where}{size}\naxial z={les.center[2]:.1f} mm", fontsize=8)
        row[1].set_title("coronal (R on left, head up)", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return path
