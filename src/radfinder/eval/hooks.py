"""Evaluation hooks the trainer runs on rank 0 (see `radfinder.train.hooks` for the hook interface)."""

from __future__ import annotations

import torch

from ..features.collate import collate_features
from ..features.store import FeatureStore
from ..train.config import RetrievalEvalSection, TrainConfig
from ..train.hooks import EvalContext, EvalHook
from .registry import hook_factories, register_hook
from .retrieval import positives_from_keys, retrieval_metrics


def hooks_for(cfg: TrainConfig) -> list[EvalHook]:
    """The hooks a training config asks for: every registered hook factory (`radfinder.eval.registry`) that
    returns one for `cfg` (built in: `eval.retrieval`)."""
    hooks = (factory(cfg) for factory in hook_factories().values())
    return [h for h in hooks if h is not None]


class RetrievalHook:
    """Text-to-image retrieval on a held-out split's frozen features: R@k of each report's own scan."""

    name = "retrieval"

    def __init__(self, section: RetrievalEvalSection):
        from ..train.data import load_records

        self.section = section
        ds = section.dataset
        if not ds.features:
            raise ValueError("eval.retrieval.dataset needs a `features` cache directory")
        self.store = FeatureStore.open(ds.features)
        records = [r for r in load_records(ds) if r.key in self.store]
        if not records:
            raise ValueError(f"{ds.features}: none of the evaluation records have cached features")
        if section.max_samples:
            records = records[: section.max_samples]
        self.records = records

    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        model = ctx.model
        dtype = model.criterion.t.dtype
        imgs, txts = [], []
        bs = self.section.batch
        for i in range(0, len(self.records), bs):
            chunk = self.records[i : i + bs]
            fb = collate_features([self.store.read(r.key) for r in chunk]).to(ctx.device, dtype=dtype)
            emb = model.encode_features_global(fb.cls, fb.patch_average, fb.window_mask, fb.grid_size)
            imgs.append(emb.retrieval.float().cpu())
            tok = model.tokenize([r.report_text for r in chunk])
            txts.append(model.encode_text(tok["input_ids"], tok["attention_mask"]).float().cpu())
        img = torch.cat(imgs).numpy()
        txt = torch.cat(txts).numpy()
        ks = [k for k in self.section.ks if k <= len(self.records)] or [1]
        ids = [r.report_id for r in self.records]  # reconstructions of one study share its report
        res = retrieval_metrics(txt, img, positives_from_keys(ids, ids), ks=ks, n_boot=0)
        out = {f"eval/retrieval/R@{k}": float(v) for k, v in res.recall.items()}
        out["eval/retrieval/n"] = float(len(self.records))
        out["eval/retrieval/median_rank"] = float(res.median_rank)
        return out


def _retrieval_hook(cfg: TrainConfig) -> RetrievalHook | None:
    return RetrievalHook(cfg.eval.retrieval) if cfg.eval.retrieval is not None else None


register_hook("retrieval", _retrieval_hook)
