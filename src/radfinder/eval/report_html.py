"""HTML rendering of the metrics dict (the same content as metrics.json) plus figure sources."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1200px;
color:#222;padding:0 1rem;line-height:1.4}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.88rem}
th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:right}
th{background:#f3f5f7}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafbfc}
.meta td{text-align:left;font-family:ui-monospace,Menlo,monospace;font-size:.82rem}
.ci{color:#666;font-size:.8rem}.note{color:#555;font-size:.85rem}
img{max-width:100%;border:1px solid #eee;margin:.4rem 0}
.figs{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}
"""


def fmt(v: Any, pct: bool = False, digits: int = 3) -> str:
    """Number for a table cell ("–" for missing)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool) or isinstance(v, str):
        return esc(v)
    if isinstance(v, int) and not pct:
        return str(v)
    return f"{100 * v:.1f}" if pct else f"{v:.{digits}f}"


def esc(s: Any) -> str:
    return html.escape(str(s))


def _ci(ci: Mapping[str, Any] | None, pct: bool = False, digits: int = 3) -> str:
    if not ci or ci.get("low") is None:
        return ""
    return f' <span class="ci">[{fmt(ci["low"], pct, digits)}, {fmt(ci["high"], pct, digits)}]</span>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(src: str, alt: str) -> str:
    return f'<img src="{esc(src)}" alt="{esc(alt)}">'


def _metadata(meta: Mapping[str, Any]) -> str:
    def show(v: Any) -> str:
        return json.dumps(v) if isinstance(v, (dict, list)) else ("–" if v is None else str(v))

    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(show(v))}</td></tr>" for k, v in meta.items())
    return f'<table class="meta">{rows}</table>'


def _retrieval(ret: Mapping[str, Any], figs: Mapping[str, str]) -> str:
    parts = ["<h2>Retrieval</h2>"]
    first = next(iter(ret.values()))
    ks = list(first["recall"])
    header = ["direction", "queries", "gallery", *[f"{k} (%)" for k in ks], "median rank", "mean rank"]
    rows = []
    for name, r in ret.items():
        cells = [esc(name.replace("_", " ")), fmt(r["n_queries"]), fmt(r["n_gallery"])]
        cells += [fmt(r["recall"][k], pct=True) + _ci(r["ci"].get(k), pct=True) for k in ks]
        cells += [fmt(r["median_rank"], digits=1) + _ci(r["ci"].get("median_rank"), digits=1)]
        cells += [fmt(r["mean_rank"], digits=1) + _ci(r["ci"].get("mean_rank"), digits=1)]
        rows.append(cells)
        rows.append(
            [f"<i>chance ({esc(name.replace('_', ' '))})</i>", "", ""]
            + [fmt(r["chance"][k], pct=True) for k in ks]
            + ["", ""]
        )
    parts.append(_table(header, rows))
    level = first.get("ci_level", 0.95)
    parts.append(
        f'<p class="note">Cosine similarity of L2-normalised embeddings; ties with non-matching items count against '
        f"the query. Brackets: {100 * level:g}% percentile bootstrap CI over queries "
        f"({first.get('n_boot', 0)} resamples, seed {first.get('seed')}).</p>"
    )
    if "recall_at_k" in figs:
        parts.append(_img(figs["recall_at_k"], "recall at k"))
    return "".join(parts)


def _pool(pool: Mapping[str, Any], names: Sequence[str], figs: Mapping[str, str]) -> str:
    parts = ["<h2>Pool retrieval</h2>"]
    for i, name in enumerate(names):
        res = pool[name]
        rows = []
        for size, d in res["pools"].items():
            ks = [k for k in d if k.startswith("R@")]
            rows.append(
                [f"pool {esc(size)}", fmt(d["n_pools"])]
                + [f"{fmt(d[k]['mean'], pct=True)} ± {fmt(d[k]['std'], pct=True)}" for k in ks]
                + [" / ".join(fmt(d["chance"][k], pct=True) for k in ks)]
            )
        parts.append(f"<h3>{esc(name)}</h3>")
        parts.append(_table(["pool size", "pools per repeat", *[f"{k} (%)" for k in ks], "chance (%)"], rows))
        parts.append(
            f'<p class="note">{res["n_repeats"]} repeats, seed {res["seed"]}, direction '
            f"{esc(res['direction'])}; mean ± std (ddof 0) over repeats.</p>"
        )
        if f"pool_{i}" in figs:
            parts.append(_img(figs[f"pool_{i}"], f"pool retrieval {name}"))
    return "".join(parts)


def _classification(cls: Mapping[str, Any], names: Sequence[str], figs: Mapping[str, str]) -> str:
    parts = ["<h2>Classification</h2>"]
    summary = []
    for name in names:
        r = cls[name]
        my = r["macro_youden"]
        summary.append(
            [
                esc(name),
                fmt(r["n_cases"]),
                fmt(r["n_findings"]),
                fmt(r["macro_auroc"]) + _ci(r["macro_auroc_ci"]),
                fmt(my["f1"]),
                fmt(my["precision"]),
                fmt(my["sensitivity"]),
                fmt(my["specificity"]),
                fmt(my["balanced_accuracy"]),
            ]
        )
    parts.append(
        _table(
            ["task", "cases", "findings", "macro AUROC", "F1", "precision", "sensitivity", "specificity", "bal. acc."],
            summary,
        )
    )
    parts.append(
        '<p class="note">Threshold metrics at each finding\'s Youden-J point, macro-averaged. '
        "Brackets: percentile bootstrap CI over cases.</p>"
    )
    if "macro_roc" in figs:
        parts.append(_img(figs["macro_roc"], "macro ROC"))
    for i, name in enumerate(names):
        r = cls[name]
        parts.append(f"<h3>{esc(name)}</h3>")
        rows = []
        for f, m in r["per_finding"].items():
            y = m["youden"]
            rows.append(
                [
                    esc(f),
                    f"{fmt(m['n_pos'])} / {fmt(m['n'])}",
                    fmt(m["auroc"]) + _ci(m["auroc_ci"]),
                    fmt(y["threshold"]),
                    fmt(y["f1"]),
                    fmt(y["precision"]),
                    fmt(y["sensitivity"]),
                    fmt(y["specificity"]),
                    fmt(y["balanced_accuracy"]),
                ]
            )
        parts.append(
            _table(
                [
                    "finding",
                    "positives / known",
                    "AUROC",
                    "threshold",
                    "F1",
                    "precision",
                    "sensitivity",
                    "specificity",
                    "bal. acc.",
                ],
                rows,
            )
        )
        if r["skipped"]:
            items = "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in r["skipped"].items())
            parts.append(f'<p class="note">Skipped findings:</p><ul class="note">{items}</ul>')
        if f"roc_grid_{i}" in figs:
            parts.append(_img(figs[f"roc_grid_{i}"], f"ROC per finding {name}"))
    return "".join(parts)


def _localization(loc: Mapping[str, Any], figs: Mapping[str, str], n_grounding: int) -> str:
    parts = ["<h2>Snippet localization</h2>"]
    methods = [
        ("model", "model (argmax)"),
        ("middle", "middle cell"),
        ("random_expected", "random cell (expected)"),
        ("random_sample", f"random cell (one draw, seed {loc.get('seed')})"),
    ]
    keys = [k for k in loc["model"]]
    labels = {
        "mae_mm": "MAE (mm)",
        "median_mm": "median (mm)",
        "acc_exact": "exact (%)",
        "per_scan_mae_mm": "per-scan MAE (mm)",
    }
    header = [
        "method",
        *[labels.get(k, k.replace("acc_within_", "within ≤ ").replace("mm", " mm") + " (%)") for k in keys],
    ]
    rows = [
        [esc(label)] + [fmt(loc[m].get(k), pct=k.startswith("acc"), digits=1) for k in keys]
        for m, label in methods
        if m in loc
    ]
    parts.append(_table(header, rows))
    parts.append(
        f'<p class="note">{loc["n_snippets"]} snippets in {loc["n_scans"]} scans; depth cells of '
        f"{fmt(loc['cell_mm'], digits=0)} mm; candidates and baselines use only cells inside the scanned extent. "
        "A snippet citing several images is scored once, against the nearest of them. \"Within\" is inclusive "
        f"(error ≤ threshold); errors are measured against the {esc(str(loc.get('truth', 'cell')))} truth. The "
        "expected random baseline has no median (not linear in the draw).</p>"
    )
    if "localization" in figs:
        parts.append(_img(figs["localization"], "localization error histogram"))
    return "".join(parts)


def render_html(
    *,
    title: str,
    metrics: Mapping[str, Any],
    figure_src: Mapping[str, str],
    pool_names: Sequence[str],
    classification_names: Sequence[str],
    n_grounding: int,
) -> str:
    body = [f"<h1>{esc(title)}</h1>", _metadata(metrics.get("metadata", {}))]
    if "retrieval" in metrics:
        body.append(_retrieval(metrics["retrieval"], figure_src))
    if "pool_retrieval" in metrics:
        body.append(_pool(metrics["pool_retrieval"], pool_names, figure_src))
    if "classification" in metrics:
        body.append(_classification(metrics["classification"], classification_names, figure_src))
    if "localization" in metrics:
        body.append(_localization(metrics["localization"], figure_src, n_grounding))
    if n_grounding:
        body.append("<h2>Grounding examples</h2>")
        body.append(
            '<p class="note">Left: a slice of the scan (superior up). Right: the predicted probability of '
            "each depth cell for the snippet. Green: true depth; orange dashed: predicted cell.</p>"
        )
        body.append(
            '<div class="figs">'
            + "".join(_img(figure_src[f"grounding_{i}"], f"grounding example {i}") for i in range(n_grounding))
            + "</div>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
