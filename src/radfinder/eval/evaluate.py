"""`evaluate(model, records, tasks, ...)`: embed once, run the task runners, write metrics.json + the HTML report.

This is what `radfinder evaluate` and the demo's evaluation stage call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import anatomy_embed as _anatomy_task  # noqa: F401  (registers anatomy-zero-shot after the built-ins)
from . import builtin_tasks as _builtin_tasks  # noqa: F401  (registers the built-in tasks)
from . import report_generation_task as _generation_task  # noqa: F401  (registers report-generation)
from .bootstrap import DEFAULT_N_BOOT
from .embed import EvalSetupError, embed_volumes, open_matching_store
from .registry import TaskContext, get_task, task_names, tasks_for_kind
from .tasks import TaskResults, record_labels

TASKS = tuple(task_names())  # the built-in tasks (the registry may hold more: `radfinder.eval.registry`)

def resolve_tasks(tasks: Sequence[str], kind: str, has_pairs: bool) -> list[str]:
    """Expand "all" for a dataset kind (a task needing pairs only with a pairs file) and validate names against the
    task registry (`radfinder.eval.registry`)."""
    out: list[str] = []
    for t in tasks:
        if t.strip().lower() == "all":
            out += tasks_for_kind(kind, has_pairs)
        else:
            out.append(get_task(t).name)
    return list(dict.fromkeys(out))


def run_tasks(
    model,
    records: Sequence[Any],
    tasks: Sequence[str],
    *,
    features: str | Path | None = None,
    pairs: str | Path | Sequence | None = None,
    labels: np.ndarray | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    batch_size: int = 8,
    show_progress: bool = False,
    options: dict[str, Any] | None = None,
) -> tuple[TaskResults, Any]:
    """Embed `records` and run the registered `tasks`; returns (results, embeddings). `labels` overrides the
    records' labels (N, F) for the classification tasks; `options` reaches every task (`TaskContext.options`)."""
    if not records:
        raise EvalSetupError("no records to evaluate")
    specs = [get_task(t) for t in tasks]
    store = open_matching_store(features, model) if features is not None else None
    need_depth = any("depth" in t.needs for t in specs)
    emb = embed_volumes(model, records, features=store, batch_size=batch_size, depth=need_depth,
                        show_progress=show_progress)
    res = TaskResults()
    y = record_labels(records) if labels is None else np.asarray(labels, dtype=np.float32)
    opts = {"features": store, **(options or {})}  # tasks that read more than the embeddings (anatomy coverage)
    ctx = TaskContext(model, records, emb, y, res, pairs=pairs, n_boot=n_boot, seed=seed, options=opts)
    for task in specs:
        out = task.run(ctx)
        if out is not None:
            res.extra[task.name] = out
    return res, emb


def grounding_examples(model, records: Sequence[Any], res: TaskResults, emb, n: int = 3) -> list:
    """Up to `n` grounding figures' inputs, at evenly spaced positions of the snippet list (not cherry-picked)."""
    from ..preprocess import apply_spec
    from .report import GroundingExample

    if res.localization is None or not res.localization_pairs or n <= 0:
        return []
    by_key = {r.key: r for r in records}
    idx = emb.index()
    m = len(res.localization_pairs)
    picks = sorted({int(round(v)) for v in np.linspace(0, m - 1, min(n, m))})
    out = []
    for i in picks:
        p = res.localization_pairs[i]
        pre = apply_spec(by_key[p.key].load_volume(), model.preprocess_spec)
        lo, hi = model.preprocess_spec.hu_window
        o0, o1 = model.preprocess_spec.out_range
        hu = lo + (pre.image.astype(np.float32) - o0) / (o1 - o0) * (hi - lo)  # back to HU for display
        out.append(GroundingExample(
            volume=hu, affine=pre.affine, depth_probs=res.localization_probs[i], snippet=p.snippet, scan_id=p.key,
            true_cell=p.depth_cell, cell_centers_z_mm=emb.cell_z_mm[idx[p.key]],
            cell_mm=model.preprocess_spec.depth_cell_mm,
        ))  # fmt: skip
    return out


def evaluate(
    model,
    records: Sequence[Any],
    tasks: Sequence[str],
    out_dir: str | Path,
    *,
    features: str | Path | None = None,
    pairs: str | Path | None = None,
    labels: np.ndarray | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    title: str = "radfinder evaluation",
    metadata: dict[str, Any] | None = None,
    n_grounding: int = 3,
    show_progress: bool = False,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the tasks and write metrics.json, figures/ and report.html to `out_dir`; returns the metrics dict
    (with "skipped" reasons and the report paths added). `options` reaches every task (`TaskContext.options`;
    `features_path` is set to `features`)."""
    from ..models.hub import weights_provenance
    from .report import collect_metadata, write_metrics_json, write_report

    res, emb = run_tasks(model, records, tasks, features=features, pairs=pairs, labels=labels, n_boot=n_boot,
                         seed=seed, show_progress=show_progress, options={"features_path": features, **(options or {})})
    meta = collect_metadata(
        checkpoint=(metadata or {}).get("checkpoint"), data=(metadata or {}).get("data"),
        spec_hash=model.preprocess_spec.hash(), n={"volumes": len(records)},
        extra={k: v for k, v in (metadata or {}).items() if k not in ("checkpoint", "data")},
    )  # fmt: skip
    meta.update(weights_provenance(model))  # the released weights (repo id, commit) when loaded by hub id
    meta["tasks"] = list(tasks)
    meta["skipped"] = dict(res.skipped)
    if res.localization is not None:
        meta["n"]["snippet_pairs"] = len(res.localization_pairs)
    paths = write_report(
        out_dir, title=title, metadata=meta, retrieval=res.retrieval, pool_retrieval=res.pool_retrieval,
        classification=res.classification or None, localization=res.localization,
        grounding=grounding_examples(model, records, res, emb, n_grounding),
    )  # fmt: skip
    import json

    metrics = json.loads(paths.metrics_json.read_text())
    metrics["report"] = {"html": str(paths.html), "metrics_json": str(paths.metrics_json)}
    if res.localization is not None:
        metrics["localization"]["pairs"] = dict(res.localization_counts)
        if res.localization_per_line is not None:
            per_line = res.localization_per_line.to_dict()
            per_line["scoring"] = ("every pairs.jsonl line alone (a snippet citing several images counts once per "
                                   "cited image); for reference only, the headline figures score each snippet once")
            metrics["localization"]["per_cited_image"] = per_line
    for name, extra in res.extra.items():
        metrics[name] = extra
    # the scored cases themselves, so that two models evaluated on the same split can be compared pairwise
    from .paired import CASES_FILE, case_arrays, save_cases

    save_cases(Path(out_dir) / CASES_FILE, case_arrays(records, res, emb.keys))
    metrics["report"]["cases"] = str(Path(out_dir) / CASES_FILE)
    write_metrics_json(paths.metrics_json, metrics)
    return metrics
