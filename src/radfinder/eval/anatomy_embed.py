"""fVLM's anatomy-level zero-shot evaluation of a trained model: anatomy embeddings of held-out scans from their
cached spatial tokens and anatomy coverage, fVLM's short prompt pairs through the model's text tower, and the
per-finding / macro AUROC of `radfinder.eval.anatomy_zero_shot` against the given labels.

Registered as the evaluation task `anatomy-zero-shot` (`radfinder evaluate CKPT --task anatomy-zero-shot
--features CACHE ...`): it needs a model with an anatomy head and a feature cache with anatomy coverage; its
metrics land in `metrics.json["anatomy-zero-shot"]` (`macro_auroc`, `per_finding_auroc`, valid scans per anatomy).

A scan's anatomy counts (valid) when its segmentation gives it at least one token and, with `exclude_cut` (the
model config's `anatomy.exclude_cut`), the crop or field of view does not cut it; findings of an invalid anatomy
leave that scan out of the finding's AUROC.
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
    exclude_cut: bool | None = None, show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, A, P) L2-normalised anatomy embeddings (zero where invalid) and valid (N, A) of `records`, in order."""
    if getattr(model, "anatomy_head", None) is None:
        raise ConfigError("this model has no anatomy head; train one with the fvlm objective (config `anatomy`)")
    store = features if isinstance(features, FeatureStore) else FeatureStore.open(features)
    names = list(model.anatomy_head.names)
    if exclude_cut is None:
        exclude_cut = bool(model.config.anatomy.exclude_cut)
    device = next(model.parameters()).device
    dtype = next(model.anatomy_head.parameters()).dtype
    embs, valids = [], []
    starts = range(0, len(records), batch)
    for s in progress(starts, total=len(starts), desc="anatomy embeddings", enabled=show_progress):
        parts = [study_tokens(store.read(r.key), names) for r in records[s : s + batch]]
        n = max(1, max(p[0].shape[0] for p in parts))
        e = parts[0][0].shape[1]
        tok = np.zeros((len(parts), n, e), np.float32)
        cov = np.zeros((len(parts), len(names), n), np.float32)
        valid = np.zeros((len(parts), len(names)), bool)
        for i, (t, c, present, cut) in enumerate(parts):
            tok[i, : t.shape[0]] = t
            cov[i, :, : c.shape[0]] = c.T
            valid[i] = present & (~cut if exclude_cut else True)
        out = model.encode_anatomy(torch.from_numpy(tok).to(device, dtype), torch.from_numpy(cov).to(device, dtype))
        embs.append(out.embeddings.float().cpu().numpy())
        valids.append(valid)
    return np.concatenate(embs), np.concatenate(valids)


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
    """Anatomy-level zero-shot AUROC of `model` on `records` (labels: (N, 18) 1/0/-1; default the records' own),
    and counts of valid scans per anatomy."""
    names = list(model.anatomy_head.names) if getattr(model, "anatomy_head", None) is not None else []
    img, valid = embed_anatomies(model, records, features, show_progress=show_progress)
    # findings of anatomies the model does not embed are not scored (listed as unmapped)
    mapping = {f: (a if a in names else None) for f, a in FINDING_ANATOMY.items()}
    pos, neg, _ = prompt_embeddings(model, mapping=mapping)
    y = np.stack([np.asarray(r.labels) for r in records]) if labels is None else np.asarray(labels)
    t = float(model.anatomy_temperature().detach()) if model.anatomy_temperature is not None else 1.0
    res = evaluate_anatomy_zero_shot(img, pos, neg, y, anatomies=names, valid=valid, n_boot=n_boot, seed=seed,
                                     temperature=t, mapping=mapping)  # fmt: skip
    counts = {n: int(valid[:, i].sum()) for i, n in enumerate(names)}
    return res, {"valid_scans": counts, "scans": len(records)}


def anatomy_zero_shot_metrics(res: AnatomyZeroShotResult, counts: dict[str, Any]) -> dict[str, Any]:
    """The headline dict of an anatomy-level zero-shot result (the demo's `methods.<m>.anatomy_zero_shot`)."""
    d = res.to_dict()
    return {"macro_auroc": d["macro_auroc"], "macro_auroc_ci": d.get("macro_auroc_ci"),
            "n_findings": d.get("n_findings"), "n_cases": d.get("n_cases"),
            "per_finding_auroc": {k: v.get("auroc") for k, v in (d.get("per_finding") or {}).items()},
            "per_finding": d.get("per_finding"), "skipped": d.get("skipped"), "unmapped": d.get("unmapped"),
            "anatomy_of": d.get("anatomy_of"), **counts}  # fmt: skip


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
