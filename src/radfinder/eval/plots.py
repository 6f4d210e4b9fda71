"""Figures for the evaluation report (matplotlib, Agg backend; every function writes one PNG and returns its path).

- `plot_roc_grid`: one small ROC panel per finding (AUROC and the Youden-J point marked);
- `plot_macro_roc`: macro-average ROC per task over faint per-finding curves;
- `plot_recall_at_k`: recall@k against k for each retrieval direction, with the chance line and bootstrap CIs;
- `plot_pool_retrieval`: pool recall@k (mean +- std over repeats) against the chance level;
- `plot_localization_errors`: histogram of localization errors with the baselines' MAEs marked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from radfinder.eval.classification import ClassificationResult, macro_roc_curve  # noqa: E402
from radfinder.eval.localization import LocalizationResult  # noqa: E402
from radfinder.eval.pool_retrieval import PoolRetrievalResult  # noqa: E402
from radfinder.eval.retrieval import RetrievalResult, recall_curve  # noqa: E402

DPI = 110
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def plot_roc_grid(result: ClassificationResult, path: str | Path, *, title: str = "ROC per finding") -> Path:
    names = list(result.findings)
    ncols = min(6, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.45 * nrows), squeeze=False)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names, strict=False):
        m = result.findings[name]
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax.plot(m.fpr, m.tpr, color=COLORS[0], lw=1.5)
        y = m.youden
        ax.plot(1 - y.specificity, y.sensitivity, "o", ms=4, color=COLORS[1])
        ax.set_title(f"{_short(name)}\nAUROC {m.auroc:.3f} (n+={m.n_pos})", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("1 - specificity (FPR)", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("sensitivity (TPR)", fontsize=7)
    fig.suptitle(f"{title}  (macro AUROC {result.macro_auroc:.3f}; dot = Youden-J threshold)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_macro_roc(results: Mapping[str, ClassificationResult], path: str | Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="chance (AUROC 0.5)")
    for i, (task, res) in enumerate(results.items()):
        color = COLORS[i % len(COLORS)]
        for m in res.findings.values():
            ax.plot(m.fpr, m.tpr, color=color, lw=0.6, alpha=0.18)
        fpr, tpr = macro_roc_curve(res)
        ci = res.macro_auroc_ci
        ci_txt = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci is not None else ""
        label = f"{task}: macro AUROC {res.macro_auroc:.3f}{ci_txt} ({len(res.findings)} findings)"
        ax.plot(fpr, tpr, color=color, lw=2.2, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title("Macro-average ROC (thin: individual findings)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=7, frameon=False)
    return _save(fig, path)


def plot_recall_at_k(results: Mapping[str, RetrievalResult], path: str | Path, *, max_k: int | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    n_gallery = max(r.n_gallery for r in results.values())
    max_k = int(max_k or min(n_gallery, max(max(r.recall) for r in results.values())))
    for i, (name, res) in enumerate(results.items()):
        color = COLORS[i % len(COLORS)]
        k, rec = recall_curve(res.ranks, max_k)
        ax.plot(k, 100 * rec, color=color, lw=2, label=f"{name.replace('_', ' ')} (N={res.n_gallery})")
        ks = [kk for kk in res.recall if kk <= max_k]
        vals = np.array([res.recall[kk] for kk in ks])
        if all(f"R@{kk}" in res.ci for kk in ks):
            lo = np.array([res.ci[f"R@{kk}"][0] for kk in ks])
            hi = np.array([res.ci[f"R@{kk}"][1] for kk in ks])
            err = 100 * np.vstack([vals - lo, hi - vals])
            ax.errorbar(ks, 100 * vals, yerr=err, fmt="o", ms=4, color=color, capsize=3)
        else:
            ax.plot(ks, 100 * vals, "o", ms=4, color=color)
        chance_k = np.arange(1, max_k + 1)
        ax.plot(chance_k, 100 * np.minimum(chance_k / res.n_gallery, 1), color=color, lw=1, ls=":", alpha=0.8)
    ax.plot([], [], color="0.4", ls=":", label="chance (k / N)")
    ax.set_xscale("log")
    ax.set_xlim(1, max_k)
    ax.set_ylim(0, 100)
    ax.set_xlabel("k (log scale)")
    ax.set_ylabel("recall@k (%)")
    ax.set_title(f"Retrieval: recall@k (markers: reported k with {_ci_txt(results)} CI)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def _ci_txt(results: Mapping[str, RetrievalResult]) -> str:
    r = next(iter(results.values()))
    return f"{100 * r.ci_level:g}% bootstrap" if r.ci else "no"


def plot_pool_retrieval(result: PoolRetrievalResult, path: str | Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    x = np.arange(len(result.pool_sizes))
    width = 0.8 / len(result.ks)
    for i, k in enumerate(result.ks):
        means = [100 * result.mean(s, k) for s in result.pool_sizes]
        stds = [100 * result.std(s, k) for s in result.pool_sizes]
        pos = x + (i - (len(result.ks) - 1) / 2) * width
        ax.bar(pos, means, width * 0.92, yerr=stds, capsize=3, color=COLORS[i % len(COLORS)], label=f"R@{k}")
        chance = [100 * min(k, s) / s for s in result.pool_sizes]
        ax.hlines(chance, pos - width / 2, pos + width / 2, colors="black", linestyles=":", lw=1.5)
    ax.plot([], [], "k:", label="chance (k / pool size)")
    ax.set_xticks(x, [f"pool {s}" for s in result.pool_sizes])
    ax.set_ylim(0, 100)
    ax.set_ylabel("recall (%)")
    ax.set_title(f"Pool retrieval ({result.direction.replace('_', ' ')}), mean ± std over {result.n_repeats} repeats")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(result.ks) + 1, frameon=False)
    return _save(fig, path)


def plot_localization_errors(result: LocalizationResult, path: str | Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.6, 4.2))
    errs = result.errors_mm
    top = max(
        float(np.max(errs["model"])),
        float(np.max(errs["middle"])),
        float(result.metrics["random_expected"]["mae_mm"] or 0.0),
    )
    bins = np.arange(0, top + 2 * result.cell_mm, result.cell_mm) - result.cell_mm / 2
    bins = bins[bins + result.cell_mm / 2 >= 0]
    ax.hist(errs["model"], bins=bins, color=COLORS[0], alpha=0.85, label="model", edgecolor="white")
    ax.hist(errs["middle"], bins=bins, histtype="step", color=COLORS[1], lw=1.5, label="middle-cell baseline")
    marks = [
        ("model MAE", result.metrics["model"]["mae_mm"], "#08306b", "-"),
        ("middle MAE", result.metrics["middle"]["mae_mm"], COLORS[1], "--"),
        ("random MAE (expected)", result.metrics["random_expected"]["mae_mm"], "0.3", ":"),
    ]
    for label, v, color, ls in marks:
        ax.axvline(v, color=color, ls=ls, lw=1.8, label=f"{label}: {v:.1f} mm")
    ax.set_xlim(left=-result.cell_mm / 2)
    ax.set_xlabel(f"absolute depth error (mm); bins = one {result.cell_mm:g} mm cell")
    ax.set_ylabel("snippets")
    ax.set_title(f"Snippet localization error (n = {result.n_snippets} snippets, {result.n_scans} scans)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _short(name: str, width: int = 30) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"
