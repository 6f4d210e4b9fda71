"""fVLM's anatomy-level zero-shot evaluation of a trained model: anatomy embeddings of held-out scans from their
cached spatial tokens and anatomy coverage, fVLM's short prompt pairs through the model's text tower, and the
per-finding / macro AUROC of `radfinder.eval.anatomy_zero_shot` against the given labels.

Registered as the evaluation task `anatomy-zero-shot` (`radfinder evaluate CKPT --task anatomy-zero-shot
--features CACHE ...`): it needs a model with an anatomy head and a feature cache with anatomy coverage; its
metrics land in `metrics.json["anatomy-zero-shot"]` (`macro_auroc`, `per_finding_auroc`, valid scans per anatomy).

A scan's anatomy is scored when its segmentation gives it at least one token (fVLM's release scores every study
whose organ mask has voxels). An anatomy that the preprocessing crop cuts is embedded from its visible tokens;
the metrics give the figures over all scored scans (the headline) and over the uncut ones alone (`uncut`). The
model config's `anatomy.exclude_cut` governs training only, as in fVLM (its random crops drop cut organs from the
loss, its evaluation does not).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..features.anatomy_batch import study_tokens
from ..features.store import FeatureStore
from ..progress import progress
from ..text.anatomy import FINDING_ANATOMY
from ..text.findings import CTRATE_FINDINGS
from . import builtin_tasks as _builtin_tasks  # noqa: F401  (the built-in tasks register first)
from .anatomy_zero_shot import AnatomyZeroShotResult, anatomy_prompts, evaluate_anatomy_zero_shot
from .bootstrap import DEFAULT_N_BOOT
from .registry import EvalTask, TaskContext, register_task


@torch.no_grad()
def embed_anatomies(
    model, records: Sequence[Any], features: str | Path | FeatureStore, *, batch: int = 16,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, A, P) L2-normalised anatomy embeddings of `records`, in order (zero where absent), present (N, A) (the
    anatomy has tokens: it is embedded from them, cut or not) and cut (N, A) (the preprocessing crop cuts it)."""
    if getattr(model, "anatomy_head", None) is None:
        raise ConfigError("this model has no anatomy head; train one with the fvlm objective (config `anatomy`)")
    store = features if isinstance(features, FeatureStore) else FeatureStore.open(features)
    names = list(model.anatomy_head.names)
    device = next(model.parameters()).device
    dtype = next(model.anatomy_head.parameters()).dtype
    embs, presents, cuts = [], [], []
    starts = range(0, len(records), batch)
    for s in progress(starts, total=len(starts), desc="anatomy embeddings", enabled=show_progress):
        parts = [study_tokens(store.read(r.key), names) for r in records[s : s + batch]]
        n = max(1, max(p[0].shape[0] for p in parts))
        e = parts[0][0].shape[1]
        tok = np.zeros((len(parts), n, e), np.float32)
        cov = np.zeros((len(parts), len(names), n), np.float32)
        for i, (t, c, _, _) in enumerate(parts):
            tok[i, : t.shape[0]] = t
            cov[i, :, : c.shape[0]] = c.T
        out = model.encode_anatomy(torch.from_numpy(tok).to(device, dtype), torch.from_numpy(cov).to(device, dtype))
        embs.append(out.embeddings.float().cpu().numpy())
        presents.append(np.stack([p[2] for p in parts]))
        cuts.append(np.stack([p[3] for p in parts]))
    return np.concatenate(embs), np.concatenate(presents), np.concatenate(cuts)


@torch.no_grad()
def prompt_embeddings(model, findings: Sequence[str] = CTRATE_FINDINGS,
                      mapping: dict[str, str | None] | None = None) -> tuple[np.ndarray, np.ndarray, list]:
    """(pos (F, P), neg (F, P), prompts) for fVLM's short prompt pairs of the findings that have an anatomy."""
    prompts = anatomy_prompts(findings, mapping)
    texts = [p.positive for p in prompts] + [p.negative for p in prompts]
    emb = model.encode_anatomy_texts(texts).float().cpu().numpy()
    return emb[: len(prompts)], emb[len(prompts) :], prompts


def run_anatomy_zero_shot(
    model, records: Sequence[Any], features: str | Path | FeatureStore, labels: np.ndarray | None = None, *,
    n_boot: int = DEFAULT_N_BOOT, seed: int = 0, show_progress: bool = False,
) -> tuple[AnatomyZeroShotResult, dict[str, Any]]:
    """Anatomy-level zero-shot AUROC of `model` on `records` (labels: (N, 18) 1/0/-1; default the records' own;
    the result's `uncut` over the uncut anatomies alone), and per anatomy the scored scans (`valid_scans`: with
    tokens) and the cut ones among them (`cut_scans`)."""
    names = list(model.anatomy_head.names) if getattr(model, "anatomy_head", None) is not None else []
    img, valid, cut = embed_anatomies(model, records, features, show_progress=show_progress)
    # findings of anatomies the model does not embed are not scored (listed as unmapped)
    mapping = {f: (a if a in names else None) for f, a in FINDING_ANATOMY.items()}
    pos, neg, _ = prompt_embeddings(model, mapping=mapping)
    y = np.stack([np.asarray(r.labels) for r in records]) if labels is None else np.asarray(labels)
    t = float(model.anatomy_temperature().detach()) if model.anatomy_temperature is not None else 1.0
    res = evaluate_anatomy_zero_shot(img, pos, neg, y, anatomies=names, valid=valid, cut=valid & cut,
                                     n_boot=n_boot, seed=seed, temperature=t, mapping=mapping)  # fmt: skip
    counts = {n: int(valid[:, i].sum()) for i, n in enumerate(names)}
    cut_counts = {n: int((valid & cut)[:, i].sum()) for i, n in enumerate(names)}
    return res, {"valid_scans": counts, "cut_scans": cut_counts, "scans": len(records)}


def anatomy_zero_shot_metrics(res: AnatomyZeroShotResult, counts: dict[str, Any]) -> dict[str, Any]:
    """The headline dict of an anatomy-level zero-shot result (the demo's `methods.<m>.anatomy_zero_shot`): the
    figures over every scored scan, and under `uncut` those over the scans whose anatomy is not cut."""
    d = res.to_dict()
    out = {"macro_auroc": d["macro_auroc"], "macro_auroc_ci": d.get("macro_auroc_ci"),
           "n_findings": d.get("n_findings"), "n_cases": d.get("n_cases"),
           "per_finding_auroc": {k: v.get("auroc") for k, v in (d.get("per_finding") or {}).items()},
           "per_finding": d.get("per_finding"), "skipped": d.get("skipped"), "unmapped": d.get("unmapped"),
           "anatomy_of": d.get("anatomy_of"), **counts}  # fmt: skip
    if "uncut" in d:
        u = d["uncut"]
        out["uncut"] = {**u, "per_finding_auroc": {k: v.get("auroc") for k, v in u["per_finding"].items()}}
    return out


def _task(ctx: TaskContext) -> dict[str, Any] | None:
    name = "anatomy-zero-shot"
    if getattr(ctx.model, "anatomy_head", None) is None:
        ctx.results.skipped[name] = "the model has no anatomy head (train one with the fvlm objective)"
        return None
    features = ctx.options.get("features")
    if features is None:
        ctx.results.skipped[name] = "needs the feature cache with spatial tokens and anatomy coverage (--features)"
        return None
    vocab = getattr(ctx.model, "label_vocabulary", None)
    names = tuple(vocab.findings) if vocab is not None else tuple(CTRATE_FINDINGS)
    if names != tuple(CTRATE_FINDINGS) or ctx.labels.shape[1] != len(CTRATE_FINDINGS):
        ctx.results.skipped[name] = "fVLM's prompt pairs and anatomy mapping cover the 18 CT-RATE findings only"
        return None
    res, counts = run_anatomy_zero_shot(ctx.model, ctx.records, features, ctx.labels, n_boot=ctx.n_boot,
                                        seed=ctx.seed)  # fmt: skip
    return anatomy_zero_shot_metrics(res, counts)


register_task(EvalTask("anatomy-zero-shot", _task, frozenset({"labels"}),
                       aliases=("anatomy_zero_shot", "fvlm-zero-shot"),
                       description="fVLM anatomy-level zero-shot ('X.' vs 'Not X.' on the anatomy embeddings)"))
