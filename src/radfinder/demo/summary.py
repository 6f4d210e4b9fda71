"""The demo's headline numbers (DIR/metrics.json) and the table printed at the end of a run."""

from __future__ import annotations

from typing import Any


def _get(d: dict, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    """Nested headline metrics of the held-out evaluation (`summary["retrieval"]["R@10"]` etc.); `details` keeps
    the full evaluation metrics."""
    t2v = _get(metrics, "retrieval", "text_to_volume") or {}
    v2t = _get(metrics, "retrieval", "volume_to_text") or {}
    zs = _get(metrics, "classification", "zero-shot (mean7)") or {}
    loc = metrics.get("localization") or {}
    out: dict[str, Any] = {
        "split": "valid (held out)",
        "retrieval": {
            "direction": "text_to_volume",
            "n_queries": t2v.get("n_queries"),
            "n_gallery": t2v.get("n_gallery"),
            **{k: v for k, v in (t2v.get("recall") or {}).items()},
            **{f"chance_{k}": v for k, v in (t2v.get("chance") or {}).items()},
            "median_rank": t2v.get("median_rank"),
            "median_rank_over_gallery": t2v.get("median_rank_over_gallery"),
            "chance_median_rank_over_gallery": t2v.get("chance_median_rank_over_gallery"),
            "mean_rank": t2v.get("mean_rank"),
            "ci": t2v.get("ci"),
            "volume_to_text": {**(v2t.get("recall") or {}), "median_rank": v2t.get("median_rank")},
        },
        "zero_shot": {
            "macro_auroc": zs.get("macro_auroc"),
            "macro_auroc_ci": zs.get("macro_auroc_ci"),
            "n_findings": zs.get("n_findings"),
            "n_cases": zs.get("n_cases"),
            "skipped": zs.get("skipped"),
            "per_finding_auroc": {k: v.get("auroc") for k, v in (zs.get("per_finding") or {}).items()},
            "macro_youden": zs.get("macro_youden"),
        },
        "localization": {
            "n_snippets": loc.get("n_snippets"),
            "n_scans": loc.get("n_scans"),
            "cell_mm": loc.get("cell_mm"),
            "mae_mm": _get(loc, "model", "mae_mm"),
            "median_mm": _get(loc, "model", "median_mm"),
            "acc_within_12mm": _get(loc, "model", "acc_within_12mm"),
            "baseline_middle_mae_mm": _get(loc, "middle", "mae_mm"),
            "baseline_random_mae_mm": _get(loc, "random_expected", "mae_mm"),
        },
        "report": _get(metrics, "report", "html"),
        "details": {k: v for k, v in metrics.items() if k != "report"},
    }
    return out


def _f(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else f"{v:.1f}"


def results_table(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, model, reference) rows: chance / baselines next to the model."""
    r, z, loc = summary["retrieval"], summary["zero_shot"], summary["localization"]
    rows = [
        (f"text-to-volume R@1 ({r.get('n_queries')} reports)", _f(r.get("R@1"), True),
         f"chance {_f(r.get('chance_R@1'), True)}"),
        ("text-to-volume R@10", _f(r.get("R@10"), True), f"chance {_f(r.get('chance_R@10'), True)}"),
        (f"text-to-volume median rank (gallery {r.get('n_gallery')})", _f(r.get("median_rank")),
         f"chance {(r.get('n_gallery') or 0) / 2 + 0.5:.1f}"),
        ("text-to-volume median rank / gallery size", _f(r.get("median_rank_over_gallery")),
         f"chance {_f(r.get('chance_median_rank_over_gallery'))}"),
        (f"zero-shot macro AUROC ({z.get('n_findings')} findings)", _f(z.get("macro_auroc")), "chance 0.500"),
        (f"localization MAE, mm ({loc.get('n_snippets')} snippets)", _f(loc.get("mae_mm")),
         f"middle {_f(loc.get('baseline_middle_mae_mm'))} / random {_f(loc.get('baseline_random_mae_mm'))}"),
        ("localization within 12 mm", _f(loc.get("acc_within_12mm"), True), ""),
    ]  # fmt: skip
    ceiling = summary.get("text_ceiling")
    if ceiling:  # zero-shot on each volume's own report: what the text side allows the image side to reach
        rows.append(("text ceiling: zero-shot on own reports", _f(ceiling.get("zero_shot_macro_auroc")),
                     f"frozen MiniLM {_f(ceiling.get('frozen_zero_shot_macro_auroc'))}"))
    lib = _get(summary, "library", "finding_search")
    if lib:  # written by the library stage, after the evaluation
        rows.append((f"library finding search precision@10 ({lib.get('findings_scored')} findings)",
                     _f(lib.get("mean_precision_at_10")), f"chance {_f(lib.get('mean_chance'))}"))  # fmt: skip
    return rows


def format_table(summary: dict[str, Any]) -> str:
    rows = [("metric (held-out valid split)", "model", "reference"), *results_table(summary)]
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [" | ".join(c.ljust(w[i]) for i, c in enumerate(row)) for row in rows]
    lines.insert(1, "-+-".join("-" * x for x in w))
    return "\n".join(lines)


def markdown_table(summary: dict[str, Any]) -> str:
    rows = results_table(summary)
    out = ["| metric (held-out valid split) | model | reference |", "| --- | --- | --- |"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out)
