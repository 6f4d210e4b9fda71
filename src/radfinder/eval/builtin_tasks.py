"""The built-in evaluation tasks, registered on import (contract: `radfinder.eval.registry`).

retrieval, zero-shot, radchestct, merlin-pool and localization fill the `TaskResults` fields that `write_report`
has always turned into metrics.json, so their keys are unchanged. (The retrieval train-time hook registers in
`radfinder.eval.hooks`.)
"""

from __future__ import annotations

from pathlib import Path

from ..data.pairs import read_pairs as read_pairs_file
from ..text.vocabulary import CTRATE18
from .registry import EvalTask, TaskContext, register_task
from .tasks import run_localization_full, run_merlin_pool, run_radchestct, run_retrieval, run_zero_shot

CORE_KINDS = ("ctrate", "manifest", "inspect")


def _retrieval(ctx: TaskContext) -> None:
    ctx.results.retrieval = run_retrieval(ctx.model, ctx.records, ctx.emb, n_boot=ctx.n_boot, seed=ctx.seed)


def _zero_shot(ctx: TaskContext) -> None:
    y = ctx.labels
    if not (y >= 0).any():
        ctx.results.skipped["zero-shot"] = "the records carry no labels"
        return
    names = (getattr(ctx.model, "label_vocabulary", None) or CTRATE18).findings
    if y.shape[1] != len(names):
        ctx.results.skipped["zero-shot"] = (f"the labels have {y.shape[1]} columns, the model's label vocabulary "
                                            f"{len(names)} findings")
        return
    ctx.results.classification["zero-shot (mean7)"] = run_zero_shot(ctx.model, ctx.emb, y, names=names,
                                                                     n_boot=ctx.n_boot, seed=ctx.seed)


def _radchestct(ctx: TaskContext) -> None:
    ctx.results.classification["Rad-ChestCT standard (16 classes)"] = run_radchestct(
        ctx.model, ctx.emb, ctx.labels, n_boot=ctx.n_boot, seed=ctx.seed)


def _merlin_pool(ctx: TaskContext) -> None:
    ctx.results.pool_retrieval = run_merlin_pool(ctx.model, ctx.records, ctx.emb)


def _localization(ctx: TaskContext) -> None:
    res, pairs, emb, model = ctx.results, ctx.pairs, ctx.emb, ctx.model
    if pairs is None:
        res.skipped["localization"] = "no snippet pairs (pairs.jsonl) given"
        return
    other = 0
    if isinstance(pairs, (str, Path)):
        pf = read_pairs_file(pairs, spec_hash=model.preprocess_spec.hash(), what="the evaluated model")
        keys, splits = set(emb.keys), {r.split for r in ctx.records}
        # a line of an evaluated split whose scan is not here is dropped (counted); other splits are not ours
        plist = [p for p in pf.rows if p.key in keys or (p.split is not None and p.split in splits)]
        other = len(pf.rows) - len(plist)
        empty = pf.counts.get("empty_snippet", 0)
    else:
        plist, empty = list(pairs), 0
    full = run_localization_full(model, emb, plist, seed=ctx.seed)
    res.localization, res.localization_pairs = full.localization, full.localization_pairs
    res.localization_probs, res.localization_per_line = full.localization_probs, full.localization_per_line
    res.localization_counts = {**full.localization_counts, "dropped_empty_snippet": empty, "other_splits": other}


register_task(EvalTask("retrieval", _retrieval, kinds=CORE_KINDS,
                       description="text-to-volume and volume-to-text retrieval, one query per report"))
register_task(EvalTask("zero-shot", _zero_shot, frozenset({"labels"}), kinds=("ctrate", "manifest"),
                       aliases=("zero_shot", "zeroshot", "zero-shot-classification"),
                       description="mean7 prompt-pair zero-shot classification, per-finding and macro AUROC"))
register_task(EvalTask("localization", _localization, frozenset({"depth", "pairs"}), kinds=("ctrate", "manifest"),
                       description="snippet depth localization in its own scan, with middle and random baselines"))
register_task(EvalTask("radchestct", _radchestct, frozenset({"labels"}), kinds=("radchestct",),
                       description="Rad-ChestCT standard protocol (18 zero-shot scores -> 16 classes)"))
register_task(EvalTask("merlin-pool", _merlin_pool, kinds=("merlin",),
                       description="Merlin pool retrieval (pools of 32/64/128, R@1/8)"))
