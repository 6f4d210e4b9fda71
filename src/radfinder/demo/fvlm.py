"""fVLM on the demo cohort: anatomy coverage in a spatial feature cache, an anatomy-head training run, and the
anatomy-level zero-shot evaluation on the held-out split (`radfinder demo --methods ...` builds on these).

Call order, after `run_demo(out, settings, stop_after="features")` (cohort, preprocessing, mining, encoder, features):

    info = fvlm_features(out, settings, log)        # spatial features + anatomy coverage (masks beside the volumes)
    train_fvlm(out, settings, log)                   # -> out/train-fvlm (configs/train/fvlm-demo.yaml's run)
    metrics = evaluate_fvlm(out, settings, log)      # {"anatomy_zero_shot": {...}} on the valid split

fVLM needs spatial tokens. `encoder` (default `FVLM_ENCODER`) picks them: "histogram" = the HU-histogram encoder
with an 8 x 8 spatial token grid per window (`HISTOGRAM_GRID`; standardised on the train split; its own model
`out/encoder-fvlm-histogram` and cache `out/features-fvlm-histogram`, because the demo's histogram cache has no
spatial tokens); "filterbank" and "histogram+filterbank" likewise, with the filter bank's cells (see
`models.filterbank`) as spatial tokens; "pretrained-synthetic"
= the shipped light3d encoder (the demo's own `out/features` when the demo ran with it, else `out/encoder-fvlm` and
`out/features-fvlm`). Both are extracted from the demo's preprocessed volumes. `weights` picks the objectives
(`{"fvlm": 1}`; a combined RadFinder + fVLM run adds `siglip`, `localization`, `prompt`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .config import DEMO_SPEC, DEMO_TEXT_LORA, DEMO_TRAIN, DemoSettings
from .stages import Log, _drop_stale_features, _records, _save_model, small_model_threads, weight_free_model

FVLM_WEIGHTS = {"fvlm": 1.0}
FVLM_ENCODER = "histogram"  # spatial tokens of the fVLM run (see the module doc)
FVLM_ENCODERS = ("histogram", "pretrained-synthetic", "concat", "filterbank", "histogram+filterbank")
WEIGHT_FREE_FVLM = ("histogram", "filterbank", "histogram+filterbank")  # built by stages.weight_free_model
HISTOGRAM_GRID = (8, 8)  # spatial tokens per window of the histogram encoder (32 x 32 x 12 mm at the demo spec)
# The anatomy head of the demo run (models.config.AnatomyHeadConfig): fVLM's four anatomies.
# Measured on the held-out split (README, "fVLM on the demo cohort"): fVLM's own linear text projection and
# sentence-pooled text features beat the shared report head and whole-text encoding with the frozen MiniLM.
FVLM_ANATOMY: dict[str, Any] = {"names": ["lung", "heart", "esophagus", "aorta"], "dim": 128, "num_heads": 4,
                                "coverage_bias": True, "exclude_cut": True, "strip_template": True,
                                "text_head": "linear", "text_pooling": "sentences"}
FVLM_TRAIN: dict[str, Any] = {"epochs": 40.0, "lr": 1.0e-3, "warmup_epochs": 2.0, "micro": 32}


def fvlm_dirs(out: Path, s: DemoSettings, encoder: str | None = None) -> tuple[Path, Path]:
    """(encoder model dir, feature cache dir) of the fVLM run (see the module doc)."""
    encoder = encoder or FVLM_ENCODER
    if encoder not in FVLM_ENCODERS:
        raise ValueError(f"fVLM encoder must be one of {FVLM_ENCODERS}, got {encoder!r}")
    if encoder in (*WEIGHT_FREE_FVLM, "concat"):
        tag = "" if tuple(HISTOGRAM_GRID) == (8, 8) else f"-{HISTOGRAM_GRID[0]}x{HISTOGRAM_GRID[1]}"
        return out / f"encoder-fvlm-{encoder}{tag}", out / f"features-fvlm-{encoder}{tag}"
    if s.encoder == "pretrained-synthetic":
        return out / "encoder", out / "features"
    return out / "encoder-fvlm", out / "features-fvlm"


def _weight_free_model(encoder: str):
    """Builder of a weight-free encoder with a `HISTOGRAM_GRID` spatial token grid, standardised on the TRAIN
    split's windows."""

    def build(out: Path, s: DemoSettings, target: Path) -> None:
        _save_model(weight_free_model(out, s, encoder, HISTOGRAM_GRID), target)

    return build


def _light3d_model(out: Path, s: DemoSettings, target: Path) -> None:
    import torch

    from ..models.config import resolve_model_config
    from ..models.radfinder import RadFinderModel
    from ..models.shipped import window_encoder_config

    torch.manual_seed(s.seed)
    cfg = resolve_model_config(s.model)
    cfg.window_encoder = type(cfg.window_encoder).model_validate(window_encoder_config("pretrained-synthetic"))
    model = RadFinderModel(cfg)
    model.config.window_encoder.options.pop("weights", None)  # the weights now live in the model's safetensors
    _save_model(model, target)


def _concat_model(out: Path, s: DemoSettings, target: Path) -> None:
    """HU histograms and the shipped light3d encoder side by side (`models.concat`), both with an
    `HISTOGRAM_GRID` spatial grid; the histogram part standardised on the TRAIN split's windows."""
    import torch

    from ..models.config import resolve_model_config
    from ..models.histogram import DEFAULT_HU_EDGES
    from ..models.radfinder import RadFinderModel
    from ..models.shipped import window_encoder_config
    from ..preprocess import PreprocessedCache

    hist_dim = 4 * (len(DEFAULT_HU_EDGES) + 1)
    light = window_encoder_config("pretrained-synthetic")
    light["options"]["spatial_grid"] = list(HISTOGRAM_GRID)
    light.pop("window_size", None)
    parts = [{"kind": "histogram", "embed_dim": hist_dim, "options": {"spatial_grid": list(HISTOGRAM_GRID)}}, light]
    cfg = resolve_model_config(s.model)
    cfg.window_encoder = type(cfg.window_encoder).model_validate(
        {"kind": "concat", "embed_dim": hist_dim + int(light["feature_dim"]), "options": {"parts": parts}})
    torch.manual_seed(s.seed)
    model = RadFinderModel(cfg)
    cache = PreprocessedCache(out / "preprocessed", DEMO_SPEC)
    batches = (torch.from_numpy(cache.get_or_compute(r.path).windows()).float() for r in _records(out, "train"))
    model.backbone_image.fit_standardization(batches)
    for part in model.config.window_encoder.options["parts"]:
        part.get("options", {}).pop("weights", None)  # the weights now live in the model's safetensors
    _save_model(model, target)


def fvlm_features(out: str | Path, s: DemoSettings, log: Log = print, *, groups: str | Path | None = None,
                  encoder: str | None = None) -> dict:
    """Spatial features (when missing) and anatomy coverage from the cohort's masks (``cohort/masks``) for the
    train and valid splits; returns the extraction summary plus per-anatomy valid counts."""
    import numpy as np
    import torch

    from ..data.anatomy import load_anatomy_groups
    from ..device import resolve_device
    from ..features import ExtractItem, FeatureStore, extract_features, state_dict_hash
    from ..models.pretrained import from_pretrained
    from ..preprocess import PreprocessedCache

    out = Path(out)
    encoder = encoder or FVLM_ENCODER
    enc_dir, feat_dir = fvlm_dirs(out, s, encoder)
    if not enc_dir.is_dir():
        build = _concat_model if encoder == "concat" else (
            _weight_free_model(encoder) if encoder in WEIGHT_FREE_FVLM else _light3d_model)
        build(out, s, enc_dir)
    model = from_pretrained(enc_dir)
    enc = model.backbone_image.eval()
    if not enc.has_spatial_tokens:
        raise RuntimeError(f"{enc_dir}: the fVLM run needs an encoder with spatial tokens")
    backbone = {"name": f"demo-{s.model}-{encoder}-spatial", "hash": state_dict_hash(enc)}
    if feat_dir != out / "features":
        _drop_stale_features(feat_dir, backbone)
    store = FeatureStore(feat_dir, DEMO_SPEC, backbone, enc.feature_dim, spatial=True)
    records = [r for sp in ("train", "valid") for r in _records(out, sp)]
    items = [ExtractItem(r.key, r.path) for r in records]
    device = resolve_device(s.device)
    enc.to(device)
    cache = PreprocessedCache(out / "preprocessed", DEMO_SPEC)
    threads = torch.get_num_threads()
    summary = extract_features(items, enc, store, batch_size=16, device=device, shard=(0, 1),
                               show_progress=s.progress, preprocessed_fn=lambda it: cache.get_or_compute(it.path),
                               masks="auto", groups=load_anatomy_groups(groups))  # fmt: skip
    torch.set_num_threads(threads)
    if summary.failed:
        raise RuntimeError(f"fVLM feature extraction failed for {len(summary.failed)} scans: {summary.failed}")
    valid = {}
    for sp in ("train", "valid"):
        rows = [store.read_anatomy(r.key) for r in _records(out, sp)]
        have = [c for c in rows if c is not None]
        names = have[0].names if have else []
        v = np.array([c.valid for c in have]) if have else np.zeros((0, 0), bool)
        cut = np.array([c.cut for c in have]) if have else np.zeros((0, 0), bool)
        fov = np.array([c.touches_fov for c in have]) if have else np.zeros((0, 0), bool)
        valid[sp] = {"scans": len(rows), "with_mask": len(have),
                     **{n: {"valid": int(v[:, i].sum()), "cut": int(cut[:, i].sum()),
                            "touches_fov": int(fov[:, i].sum())} for i, n in enumerate(names)}}
    log(f"  fVLM anatomy coverage: {len(summary.anatomy_written)} scans written, {len(summary.no_mask)} without a "
        f"mask; valid per anatomy (train): " + ", ".join(f"{k} {x['valid']}/{valid['train']['with_mask']}"
                                                         for k, x in valid["train"].items() if isinstance(x, dict)))
    return {"features": str(feat_dir), "encoder": str(enc_dir), **summary.as_dict(), "anatomy": valid}


def fvlm_init(out: str | Path, s: DemoSettings, log: Log = print, *, encoder: str | None = None) -> Path:
    """The fVLM run's initial model: the encoder's model with combiner inputs standardised on the train features
    (needed when RadFinder's objectives train with it; harmless otherwise). The anatomy head is added by the
    training config (`model.anatomy`)."""
    from ..features import FeatureStore, feature_statistics
    from ..models.pretrained import from_pretrained

    out = Path(out)
    enc_dir, feat_dir = fvlm_dirs(out, s, encoder)
    if enc_dir == out / "encoder" and (out / "encoder-standardized").is_dir():
        return out / "encoder-standardized"
    target = enc_dir.with_name(enc_dir.name + "-standardized")
    model = from_pretrained(enc_dir)
    stats = feature_statistics(FeatureStore.open(feat_dir), [r.key for r in _records(out, "train")])
    model.feature_comb_image.fold_input_standardization(stats)
    _save_model(model, target)
    return target


def fvlm_train_config_dict(s: DemoSettings, out: Path, init: Path, features: Path, n_train: int | None = None,
                           weights: dict[str, float] | None = None) -> dict[str, Any]:
    """The training config (a dict for `TrainConfig`) of the demo's fVLM run (configs/train/fvlm-demo.yaml)."""
    cohort = out / "cohort"
    dataset = {"kind": "ctrate", "root": str(cohort), "split": "train", "mode": "first_all",
               "features": str(features), "pairs": str(out / "mining" / "pairs.jsonl"),
               "labels_csv": str(out / "mining" / "train_labels.csv"), "name": "synthetic"}  # fmt: skip
    cfg = json.loads(json.dumps(DEMO_TRAIN))
    cfg["seed"] = s.seed
    cfg["device"] = s.device
    cfg["model"] = {"init": str(init), "text_train": FVLM_TRAIN.get("text_train") or s.text_train,
                    "anatomy": dict(FVLM_ANATOMY)}
    if FVLM_TRAIN.get("text_lora"):
        cfg["model"]["text_lora"] = dict(FVLM_TRAIN["text_lora"])
    elif cfg["model"]["text_train"] == "lora":  # `--text-train lora`: the demo's MiniLM adapters, as the main run's
        cfg["model"]["text_lora"] = dict(DEMO_TEXT_LORA)
    cfg["data"] = {"datasets": [dataset], "source": "features", "max_snippets_per_scan": 4}
    cfg["losses"]["weights"] = dict(weights or FVLM_WEIGHTS)
    cfg["optim"] = {"lr": FVLM_TRAIN["lr"], "warmup_epochs": FVLM_TRAIN["warmup_epochs"]}
    micro = FVLM_TRAIN["micro"] if n_train is None else max(2, min(FVLM_TRAIN["micro"], n_train))
    cfg["batch"] = {"micro": micro, "accum": 1}
    sched: dict[str, Any] = {"epochs": FVLM_TRAIN["epochs"]}
    if s.max_steps is not None:
        sched["max_steps"] = s.max_steps
    cfg["schedule"] = sched
    cfg["logging"]["progress"] = s.progress
    return cfg


def train_fvlm(out: str | Path, s: DemoSettings, log: Log = print, *, weights: dict[str, float] | None = None,
               run_name: str = "train-fvlm", encoder: str | None = None) -> dict[str, Any]:
    """Train the fVLM run (or a combined one, `weights`) into ``out/<run_name>``; returns the run's summary."""

    from ..train.checkpoint import latest_checkpoint
    from ..train.config import TrainConfig
    from ..train.trainer import train

    out = Path(out)
    _, feat_dir = fvlm_dirs(out, s, encoder)
    init = fvlm_init(out, s, log, encoder=encoder)
    n_train = len(_records(out, "train"))
    cfg = TrainConfig.model_validate(fvlm_train_config_dict(s, out, init, feat_dir, n_train, weights))
    run_dir = out / run_name
    if run_dir.exists() and latest_checkpoint(run_dir) is not None:
        shutil.rmtree(run_dir)  # the demo owns this folder; a finished or stale run is trained again
    with small_model_threads(s.device):
        result = train(cfg, run_dir)
    model_dir = latest_checkpoint(run_dir) / "model"
    info = result.as_dict()
    info["model"] = str(model_dir)
    return {k: v for k, v in info.items() if k in ("steps", "total_steps", "epochs", "final_loss", "seconds", "model")}


def evaluate_fvlm(out: str | Path, s: DemoSettings, log: Log = print, *, model_dir: str | Path | None = None,
                  run_name: str = "train-fvlm", encoder: str | None = None,
                  cases_out: str | Path | None = None) -> dict[str, Any]:
    """Anatomy-level zero-shot AUROC on the held-out valid split against the cohort's ground-truth labels
    (`methods.fvlm.anatomy_zero_shot.*` in the demo's metrics.json). `cases_out`: write the scored cases there
    (`eval.paired`: keys, azs_scores, azs_labels) for a paired comparison with another method."""
    import numpy as np

    from ..eval.anatomy_embed import anatomy_zero_shot_metrics, run_anatomy_zero_shot
    from ..models.pretrained import from_pretrained
    from ..train.checkpoint import latest_checkpoint

    out = Path(out)
    _, feat_dir = fvlm_dirs(out, s, encoder)
    model_dir = Path(model_dir) if model_dir else latest_checkpoint(out / run_name) / "model"
    model = from_pretrained(model_dir)
    valid = _records(out, "valid")  # held out: never trained on
    labels = np.stack([r.labels for r in valid])
    res, counts = run_anatomy_zero_shot(model, valid, feat_dir, labels, n_boot=s.n_boot, seed=0)
    azs = anatomy_zero_shot_metrics(res, counts)
    if cases_out is not None:
        from ..eval.paired import save_cases

        cls = res.classification
        save_cases(cases_out, {"keys": np.asarray([r.key for r in valid], dtype=str), "azs_scores": cls.scores,
                               "azs_labels": cls.labels})  # fmt: skip
    uncut = (azs.get("uncut") or {}).get("macro_auroc")
    log(f"  fVLM anatomy-level zero-shot macro AUROC (valid, {azs['n_findings']} findings): {azs['macro_auroc']:.3f}"
        + ("" if uncut is None else f"; uncut anatomies only {uncut:.3f}"))
    return {"anatomy_zero_shot": azs, "model": str(model_dir)}
