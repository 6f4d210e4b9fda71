"""Loss curves from a run's `log.jsonl`: one panel per objective, raw values and a moving average."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..losses.registry import get_objective, objective_names

PANELS = ("loss", "siglip", "prompt", "localization")  # RadFinder's; `panels=None` follows the registry
# the window encoder's pre-training objective (radfinder.losses.dense_pretrain)
PRETRAIN_PANELS = ("loss", "dense_lesion", "depth_lesion", "window_lesion", "max_lesion", "dense_organ")


def plot_log(
    log_path: str | Path, png_path: str | Path, title: str = "", smooth: int = 10,
    panels: tuple[str, ...] | None = None,
) -> Path:
    """One panel per key of `panels`; None: the total loss and every registered objective's log keys that the log
    holds (`radfinder.losses.registry`), RadFinder's three when none is found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in Path(log_path).read_text().splitlines() if x.strip()]
    if not rows:
        raise ValueError(f"{log_path}: no logged steps")
    if panels is None:
        keys = [k for n in objective_names() for k in get_objective(n).keys if any(k in r for r in rows)]
        panels = ("loss", *keys) if keys else PANELS
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, key in zip(axes, panels, strict=True):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if not pts:
            ax.set_title(f"{key}: not logged")
            continue
        x, y = (np.asarray(v, dtype=float) for v in zip(*pts, strict=True))
        ax.plot(x, y, color="0.75", lw=0.8, label="per step")
        k = max(1, min(smooth, len(y)))
        if k > 1:
            ax.plot(x[k - 1 :], np.convolve(y, np.ones(k) / k, mode="valid"), color="C0", lw=1.8,
                    label=f"mean of {k}")
        ax.set_title(key)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path
