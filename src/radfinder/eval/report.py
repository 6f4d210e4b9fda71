"""`metrics.json` and the HTML evaluation report.

`write_report(out_dir, ...)` writes
- ``metrics.json``: ``{"metadata": {...}, "retrieval": {...}, "pool_retrieval": {...}, "classification": {...},
  "localization": {...}}`` (only the tasks given). Values are numbers (NaN/inf become null), plus short
  labels (task names, directions, skip reasons) and the metadata;
- ``report.html``: tables and figures, self-contained apart from its images;
- ``figures/*.png``: the figures, referenced from the HTML by relative path (so they can be reused in papers).
  With ``embed_images=True`` they are also inlined as base64 data URIs and the HTML is a single portable file.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radfinder.eval._common import clean_number
from radfinder.eval.classification import ClassificationResult
from radfinder.eval.localization import LocalizationResult
from radfinder.eval.pool_retrieval import PoolRetrievalResult
from radfinder.eval.report_html import render_html
from radfinder.eval.retrieval import RetrievalResult


@dataclass
class GroundingExample:
    """Arguments of `radfinder.eval.grounding.plot_grounding_example` for one snippet."""

    volume: np.ndarray
    affine: np.ndarray
    depth_probs: np.ndarray
    snippet: str = ""
    scan_id: str = ""
    true_world_z_mm: float | None = None
    true_cell: int | None = None
    cell_centers_z_mm: np.ndarray | None = None
    cell_mm: float = 12.0
    view: str = "coronal"
    extra: dict[str, Any] = field(default_factory=dict)  # more keyword arguments for the plot


@dataclass
class ReportPaths:
    out_dir: Path
    metrics_json: Path
    html: Path
    figures: dict[str, Path]


def git_sha(path: str | Path | None = None) -> str | None:
    """HEAD commit of the git checkout holding `path` (default: this package), or None."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha or None


def collect_metadata(
    *,
    checkpoint: str | None = None,
    data: str | Mapping[str, Any] | None = None,
    spec_hash: str | None = None,
    n: int | Mapping[str, int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Provenance for metrics.json: what was evaluated on what, by which code, when."""
    from radfinder import __version__

    meta: dict[str, Any] = {
        "radfinder_version": __version__,
        "git_sha": git_sha(),
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "checkpoint": checkpoint,
        "data": dict(data) if isinstance(data, Mapping) else data,
        "spec_hash": spec_hash,
        "n": dict(n) if isinstance(n, Mapping) else n,
    }
    if extra:
        meta.update(extra)
    return meta


def _clean(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, Path):
        return str(obj)
    return clean_number(obj)


def build_metrics(
    *,
    metadata: Mapping[str, Any],
    retrieval: Mapping[str, RetrievalResult] | None = None,
    pool_retrieval: Mapping[str, PoolRetrievalResult] | None = None,
    classification: Mapping[str, ClassificationResult] | None = None,
    localization: LocalizationResult | None = None,
) -> dict[str, Any]:
    """The nested metrics dict written to metrics.json (JSON-safe: NaN -> None)."""
    out: dict[str, Any] = {"metadata": dict(metadata)}
    if retrieval:
        out["retrieval"] = {k: v.to_dict() for k, v in retrieval.items()}
    if pool_retrieval:
        out["pool_retrieval"] = {k: v.to_dict() for k, v in pool_retrieval.items()}
    if classification:
        out["classification"] = {k: v.to_dict() for k, v in classification.items()}
    if localization is not None:
        out["localization"] = localization.to_dict()
    return _clean(out)


def write_metrics_json(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(metrics), indent=2, allow_nan=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:  # atomic: a full disk or a kill leaves the previous metrics.json, never half of a new one
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_report(
    out_dir: str | Path,
    *,
    title: str = "radfinder evaluation",
    metadata: Mapping[str, Any] | None = None,
    retrieval: Mapping[str, RetrievalResult] | None = None,
    pool_retrieval: Mapping[str, PoolRetrievalResult] | None = None,
    classification: Mapping[str, ClassificationResult] | None = None,
    localization: LocalizationResult | None = None,
    grounding: Sequence[GroundingExample] = (),
    embed_images: bool = False,
) -> ReportPaths:
    """Write metrics.json, figures/*.png and report.html under `out_dir` (see module docstring).

    `retrieval`: direction -> result (e.g. from `bidirectional_retrieval`); `pool_retrieval` and
    `classification`: task name -> result (e.g. "CT-RATE zero-shot", "Rad-ChestCT standard")."""
    from radfinder.eval import plots
    from radfinder.eval.grounding import plot_grounding_example

    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    metadata = dict(metadata) if metadata is not None else collect_metadata()
    metrics = build_metrics(
        metadata=metadata,
        retrieval=retrieval,
        pool_retrieval=pool_retrieval,
        classification=classification,
        localization=localization,
    )
    metrics_path = write_metrics_json(out / "metrics.json", metrics)

    figures: dict[str, Path] = {}
    if retrieval:
        figures["recall_at_k"] = plots.plot_recall_at_k(retrieval, fig_dir / "recall_at_k.png")
    for i, res in enumerate((pool_retrieval or {}).values()):
        figures[f"pool_{i}"] = plots.plot_pool_retrieval(res, fig_dir / f"pool_retrieval_{i}.png")
    if classification:
        figures["macro_roc"] = plots.plot_macro_roc(classification, fig_dir / "roc_macro.png")
        for i, (task, res) in enumerate(classification.items()):
            figures[f"roc_grid_{i}"] = plots.plot_roc_grid(res, fig_dir / f"roc_grid_{i}.png", title=f"{task}: ROC")
    if localization is not None:
        figures["localization"] = plots.plot_localization_errors(localization, fig_dir / "localization_errors.png")
    for i, ex in enumerate(grounding):
        figures[f"grounding_{i}"] = plot_grounding_example(
            ex.volume,
            ex.affine,
            ex.depth_probs,
            fig_dir / f"grounding_{i}.png",
            true_world_z_mm=ex.true_world_z_mm,
            true_cell=ex.true_cell,
            cell_centers_z_mm=ex.cell_centers_z_mm,
            cell_mm=ex.cell_mm,
            snippet=ex.snippet,
            scan_id=ex.scan_id,
            view=ex.view,
            **ex.extra,
        )

    def src(key: str) -> str:
        p = figures[key]
        if embed_images:
            return "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii")
        return p.relative_to(out).as_posix()

    page = render_html(
        title=title,
        metrics=metrics,
        figure_src={k: src(k) for k in figures},
        pool_names=list(pool_retrieval or {}),
        classification_names=list(classification or {}),
        n_grounding=len(grounding),
    )
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return ReportPaths(out, metrics_path, html_path, figures)
