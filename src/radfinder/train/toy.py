"""A learnable toy cohort for smoke tests, benchmarks and loss-curve checks (no CT volumes, no downloads).

`make_toy_cohort(root, n)` writes
  manifest.jsonl          one row per scan: id, volume (a placeholder path), findings, impressions, 18 labels
  features/               a frozen-feature cache whose features encode the labels (class prototypes + noise)
  pairs.jsonl             snippets whose target depth cell carries a matching marker in axis2
  text/                   a tiny randomly initialised BERT and a word-level tokenizer over the toy vocabulary
and returns the model overrides that plug that text tower into a small RadFinder config. Everything is a
deterministic function of the seed. The signal is real but simple: a model can lower every objective on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..features.store import AnatomyCoverage, FeatureRecord, FeatureStore
from ..text.anatomy import FINDING_ANATOMY
from ..text.findings import CTRATE_FINDINGS

TOY_BACKBONE = {"name": "toy-prototypes", "hash": "toy-prototypes-v1"}
DEPTH_TOKENS = 8
SIDES = ("left", "right")
LOBES = ("upper", "middle", "lower")
ANATOMIES = ("lung", "heart", "esophagus", "aorta")
TEMPLATES = [f"{a.capitalize()} shows no significant abnormalities." for a in ANATOMIES]


def _toy_anatomy(grid, labels, protos, rng, feature_dim: int, noise: float):
    """Spatial tokens (Hg, Wg, Dg, 2, 2, 8, E) whose anatomy tokens carry that anatomy's positive findings, and
    their coverage: lung = the first in-plane row, heart / esophagus / aorta share the second row."""
    spatial = rng.standard_normal((*grid, 2, 2, DEPTH_TOKENS, feature_dim)).astype(np.float32) * noise
    cov = np.zeros((*grid, 2, 2, DEPTH_TOKENS, len(ANATOMIES)), np.float32)
    half = DEPTH_TOKENS // 2
    places = {"lung": (0, slice(None), slice(None), 1.0), "heart": (1, 0, slice(None), 0.5),
              "esophagus": (1, 1, slice(0, half), 1.0), "aorta": (1, 1, slice(half, None), 0.8)}
    for a, (i, j, t, c) in places.items():
        k = ANATOMIES.index(a)
        cov[:, :, :, i, j, t, k] = c
        mine = [f for f, y in zip(CTRATE_FINDINGS, labels, strict=True) if y == 1 and FINDING_ANATOMY.get(f) == a]
        for f in mine:
            spatial[:, :, :, i, j, t] += protos[CTRATE_FINDINGS.index(f)]
    cut = np.zeros(len(ANATOMIES), bool)
    cut[3] = rng.random() < 0.15  # now and then the aorta is cut by the crop
    return spatial, AnatomyCoverage(list(ANATOMIES), cov, cut, np.ones(len(ANATOMIES), np.int64), "toy", "toy")


def _report(labels: np.ndarray, rng: np.random.Generator) -> tuple[str, str]:
    present = [f for f, y in zip(CTRATE_FINDINGS, labels, strict=True) if y == 1]
    absent = [f for f, y in zip(CTRATE_FINDINGS, labels, strict=True) if y == 0]
    rng.shuffle(absent)
    findings = " ".join([f"{f.lower()} is present." for f in present] + [f"no {f.lower()}." for f in absent[:3]])
    impressions = ", ".join(f.lower() for f in present) if present else "no acute findings"
    return findings, impressions + "."


def write_tiny_text_tower(directory: Path, texts: list[str], hidden: int = 32, seed: int = 0) -> Path:
    """A 1-layer BERT (no dropout, so runs are exactly reproducible) and a word-level tokenizer for `texts`."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from ..text.prompts import load_prompt_bank

    bank = load_prompt_bank()
    split = pre_tokenizers.Whitespace()
    words: set[str] = set()
    for t in [*texts, *(p for f in bank.findings for side in bank.disease_prompts(f) for p in side)]:
        words.update(w for w, _ in split.pre_tokenize_str(t.lower()))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(specials + sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", model_max_length=256)
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=256, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    BertModel(cfg).save_pretrained(directory)  # with the pooler, so AutoModel loads every weight
    return directory


def toy_model_overrides(text_dir: str | Path, feature_dim: int = 12, text_hidden: int = 32) -> dict[str, Any]:
    """Overrides of the `tiny` preset for a CPU-second-sized model over the toy cohort's features."""
    return {
        "window_encoder": {"embed_dim": feature_dim, "depth": 1, "num_heads": 2},
        "combiner": {"embed_dim": feature_dim, "depth": 1, "num_heads": 2},
        "heads": {"hidden_dim": 128, "bottleneck_dim": 32},
        "projection_dim": 16,
        "text": {"source": "hf", "path": str(text_dir), "hidden_size": text_hidden, "pooling": "mean",
                 "max_length": 128},
    }


def make_toy_cohort(root: str | Path, n: int = 32, *, seed: int = 0, feature_dim: int = 12,
                    noise: float = 0.5, text_tower: bool = True, anatomy: bool = False) -> dict[str, Any]:
    """`anatomy`: the cache also keeps spatial tokens and anatomy coverage (for the fvlm objective), drawn from a
    generator of its own, so every other array equals the cohort made without it."""
    from ..preprocess.spec import resolve_spec

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    q = len(CTRATE_FINDINGS)
    protos = rng.standard_normal((q, feature_dim)).astype(np.float32)
    markers = {(s, lo): rng.standard_normal(feature_dim).astype(np.float32) for s in SIDES for lo in LOBES}
    store = FeatureStore(root / "features", resolve_spec(None), TOY_BACKBONE, feature_dim, spatial=anatomy)
    rng_anatomy = np.random.default_rng([seed, 7])
    rows, pairs, texts = [], [], []
    for i in range(n):
        key = f"toy_{i:04d}"
        labels = (rng.random(q) < 0.3).astype(np.int64)
        labels[rng.random(q) < 0.1] = -1  # some unknown
        findings, impressions = _report(np.where(labels == -1, 0, labels), rng)
        grid = (int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(1, 4)))
        signal = protos[labels == 1].sum(0) if (labels == 1).any() else np.zeros(feature_dim, np.float32)
        cls = rng.standard_normal((*grid, feature_dim)).astype(np.float32) * noise + signal
        avg = rng.standard_normal((*grid, feature_dim)).astype(np.float32) * noise + signal
        axis2 = rng.standard_normal((*grid, DEPTH_TOKENS, feature_dim)).astype(np.float32) * noise
        n_cells = grid[2] * DEPTH_TOKENS
        for _ in range(int(rng.integers(0, 3))):
            side, lobe = SIDES[int(rng.integers(2))], LOBES[int(rng.integers(3))]
            cell = int(rng.integers(n_cells))
            w, t = divmod(cell, DEPTH_TOKENS)
            axis2[:, :, w, t] += 3.0 * markers[(side, lobe)]
            text = f"nodule in the {side} {lobe} lobe"
            pairs.append({"key": key, "snippet": text, "depth_cell": cell, "split": "train",
                          "spec_hash": store.spec.hash()})
            texts.append(text)
        spatial = None
        if anatomy:
            spatial, cov = _toy_anatomy(grid, labels, protos, rng_anatomy, feature_dim, noise)
            store.write_anatomy(key, cov)
        store.write(FeatureRecord(key, cls, avg, axis2, np.eye(4), spatial=spatial))
        row = {"id": key, "volume": f"volumes/{key}.nii.gz", "findings": findings, "impressions": impressions,
               "patient": f"p{i:04d}", "split": "train"}
        row.update({f: int(y) for f, y in zip(CTRATE_FINDINGS, labels, strict=True)})
        rows.append(row)
        texts += [findings, impressions, "Findings: Impressions:"]
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out = {"root": str(root), "manifest": str(root / "manifest.jsonl"), "features": str(root / "features"),
           "pairs": str(root / "pairs.jsonl"), "n": n, "n_pairs": len(pairs)}
    if text_tower:
        if anatomy:
            texts += TEMPLATES
        out["text"] = str(write_tiny_text_tower(root / "text", texts, seed=seed))
        out["model_overrides"] = toy_model_overrides(out["text"], feature_dim)
    return out


def toy_train_config(cohort: dict[str, Any], **overrides: Any):
    """A TrainConfig over a toy cohort: fp32 CPU, small batch, every objective on; `overrides` are section dicts."""
    from .config import TrainConfig

    data = {
        "seed": 0,
        "device": "cpu",
        "model": {"init": "tiny", "overrides": cohort["model_overrides"]},
        "data": {"datasets": [{"kind": "manifest", "root": cohort["manifest"], "split": "train",
                               "features": cohort["features"], "pairs": cohort["pairs"], "name": "toy"}]},
        "losses": {"b_init": -2.0},
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "batch": {"micro": 4, "accum": 2},
        "schedule": {"epochs": 1},
        "logging": {"tensorboard": False, "progress": False},
        "checkpoint": {"every_steps": 1000},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return TrainConfig.model_validate(data)
