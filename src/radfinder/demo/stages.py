"""The demo's stages. Each takes the output folder and the settings, writes its outputs under it and returns a
small JSON-able summary; `pipeline.run_demo` runs them in order, timing and skipping finished ones."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..progress import progress
from .config import DEMO_SPEC, DemoSettings, train_config_dict

Log = Callable[[str], None]


@contextmanager
def small_model_threads(device: str = "auto") -> Iterator[None]:
    """One torch thread on a CPU while the demo trains or runs its combiner and heads: they are tiny, and their many
    small ops run several times faster on one thread than split across two (measured here: ~10x for a demo
    epoch). On a GPU nothing changes."""
    import torch

    from ..device import resolve_device

    threads = torch.get_num_threads()
    if resolve_device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
# The frozen window encoders the demo can use: the weight-free ones (HU histograms, the multi-scale Hessian filter
# bank, both side by side; `models.weight_free`), the shipped light3d encoder pre-trained on its own synthetic
# cohort, the ASTRA ResNet-152 (real-CT weights, radfinder[astra]) and the light3d architecture at its seeded
# random initialisation (a control, not an encoder anyone should use). The default is DemoSettings.encoder.
ENCODERS = ("pretrained-synthetic", "histogram", "filterbank", "histogram+filterbank", "astra", "random")
WEIGHT_FREE = ("histogram", "filterbank", "histogram+filterbank")


def _records(out: Path, split: str):
    from ..data.ctrate import load_ctrate

    return load_ctrate(out / "cohort", split=split, mode="first_all")


def stage_cohort(out: Path, s: DemoSettings, log: Log) -> dict[str, Any]:
    from ..data.synth import make_cohort

    summary = make_cohort(
        out / "cohort",
        s.studies,
        s.seed,
        res="demo",
        workers=s.workers,
        valid_fraction=s.valid_fraction,
        overwrite=True,
        show_progress=s.progress,
    )
    return {k: summary[k] for k in ("n_studies", "n_patients", "n_volumes", "splits", "n_references")}


def stage_preprocess(out: Path, s: DemoSettings, log: Log) -> dict[str, Any]:
    from ..preprocess import PreprocessedCache

    cache = PreprocessedCache(out / "preprocessed", DEMO_SPEC)
    records = _records(out, "train") + _records(out, "valid")
    for r in progress(records, total=len(records), desc="preprocess", enabled=s.progress):
        cache.get_or_compute(r.path)
    n = len(records)
    return {"volumes": n, "spec": DEMO_SPEC.model_dump(mode="json"), "spec_hash": DEMO_SPEC.hash()}


def stage_mining(out: Path, s: DemoSettings, log: Log) -> dict[str, Any]:
    from ..data.mining import mine_records
    from .mining import write_rule_labels

    train, valid = _records(out, "train"), _records(out, "valid")
    counts = write_rule_labels(train, out / "mining" / "train_labels.csv")
    summary = mine_records(
        train + valid, out / "cohort" / "dicom", spec=DEMO_SPEC, out=out / "mining" / "pairs.jsonl",
        show_progress=s.progress,
    )
    rows = [json.loads(x) for x in (out / "mining" / "pairs.jsonl").read_text().splitlines() if x.strip()]
    per_split = {sp: sum(r["split"] == sp for r in rows) for sp in ("train", "valid")}
    return {"train_label_positives": counts, "pairs": per_split, "references": summary.to_json()}


def stage_encoder(out: Path, s: DemoSettings, log: Log) -> dict[str, Any]:
    """The frozen window encoder and the model around it (combiner, heads, text tower of `s.model`)."""
    import torch

    from ..models.config import resolve_model_config
    from ..models.radfinder import RadFinderModel
    from ..models.shipped import read_card, window_encoder_config

    torch.manual_seed(s.seed)
    info: dict[str, Any] = {"encoder": s.encoder, "model": s.model}
    if s.encoder not in ENCODERS:
        raise ConfigError(f"encoder must be one of {', '.join(ENCODERS)}, got {s.encoder!r}")
    if s.encoder in WEIGHT_FREE:
        return _weight_free_encoder(out, s, info)
    if s.encoder == "astra":
        return _astra_encoder(out, s, info)
    cfg = resolve_model_config(s.model)
    shipped = window_encoder_config("pretrained-synthetic")
    if s.encoder == "random":  # the control: the same architecture at its seeded initialisation
        shipped["options"].pop("weights")
    cfg.window_encoder = type(cfg.window_encoder).model_validate(shipped)
    model = RadFinderModel(cfg)
    # the weights now live in the model's safetensors: the saved config names the architecture only
    model.config.window_encoder.options.pop("weights", None)
    _save_model(model, out / "encoder")
    card = read_card("pretrained-synthetic")
    return info | {"feature_dim": model.backbone_image.feature_dim, "weights_sha256": card.get("sha256"),
                   "pretrained": s.encoder != "random"}  # fmt: skip


def _save_model(model, target: Path) -> None:
    """Write `model` to `target` atomically (a crash leaves the old folder or none, never half of one)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, preprocess=DEMO_SPEC)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _astra_encoder(out: Path, s: DemoSettings, info: dict[str, Any]) -> dict[str, Any]:
    """The pretrained ASTRA I3ResNet-152 (weights from the radfinder[astra] extra), frozen as it is."""
    from ..models.config import resolve_model_config
    from ..models.radfinder import RadFinderModel

    cfg = resolve_model_config(s.model, ["window_encoder.kind=resnet3d", "window_encoder.embed_dim=2048"])
    cfg.window_encoder.options = {"weights": "astra"}
    model = RadFinderModel(cfg)
    # the weights now live in the model's safetensors: the saved config names the architecture only, so the
    # encoder and every checkpoint trained from it load without the radfinder[astra] extra
    model.config.window_encoder.options = {}
    _save_model(model, out / "encoder")
    return info | {"feature_dim": 2048, "weights": "astra"}


def weight_free_model(out: Path, s: DemoSettings, name: str, spatial_grid=None):
    """`s.model` around the weight-free window encoder `name` (`models.weight_free`; optionally with a spatial token
    grid), its standardisation fitted on the TRAIN split's windows only."""
    import torch

    from ..models.config import resolve_model_config
    from ..models.radfinder import RadFinderModel
    from ..models.weight_free import weight_free_config
    from ..preprocess import PreprocessedCache

    cfg = resolve_model_config(s.model)
    # the preset's other window-encoder fields stay (unused by these kinds), as with a command-line override
    fields = cfg.window_encoder.model_dump() | weight_free_config(
        name, spacing_mm=DEMO_SPEC.spacing, spatial_grid=spatial_grid, window_size=cfg.window_encoder.window_size)
    cfg.window_encoder = type(cfg.window_encoder).model_validate(fields)
    torch.manual_seed(s.seed)
    model = RadFinderModel(cfg)
    cache = PreprocessedCache(out / "preprocessed", DEMO_SPEC)
    batches = (torch.from_numpy(cache.get_or_compute(r.path).windows()).float() for r in _records(out, "train"))
    model.backbone_image.fit_standardization(batches)
    return model


def _weight_free_encoder(out: Path, s: DemoSettings, info: dict[str, Any]) -> dict[str, Any]:
    """A frozen weight-free window encoder (histogram, filterbank or both), standardised on the TRAIN split."""
    model = weight_free_model(out, s, s.encoder)
    _save_model(model, out / "encoder")
    return info | {"feature_dim": model.backbone_image.feature_dim}


def stage_features(out: Path, s: DemoSettings, log: Log) -> dict[str, Any]:
    import torch

    from ..device import resolve_device
    from ..features import ExtractItem, FeatureStore, extract_features, state_dict_hash
    from ..models.pretrained import from_pretrained
    from ..preprocess import PreprocessedCache

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = from_pretrained(out / "encoder")
    enc = model.backbone_image.eval()
    backbone = {"name": f"demo-{s.model}-{s.encoder}", "hash": state_dict_hash(enc)}
    _drop_stale_features(out / "features", backbone)
    # spatial tokens (a coarse grid per depth token) go into the cache where the encoder gives them, for
    # anatomy-level pooling; the demo's cache stays well under 1 GB with them
    store = FeatureStore(out / "features", DEMO_SPEC, backbone, enc.feature_dim, spatial=enc.has_spatial_tokens)
    items = [ExtractItem(r.key, r.path) for sp in ("train", "valid") for r in _records(out, sp)]
    device = resolve_device(s.device)
    enc.to(device)
    cache = PreprocessedCache(out / "preprocessed", DEMO_SPEC)  # the preprocess stage's volumes, not again
    summary = extract_features(
        items, enc, store, batch_size=16, device=device, shard=(0, 1), show_progress=s.progress,
        preprocessed_fn=lambda it: cache.get_or_compute(it.path),
    )  # fmt: skip
    if summary.failed:
        raise RuntimeError(f"feature extraction failed for {len(summary.failed)} scans: {summary.failed}")
    info = summary.as_dict()
    info["cache_bytes"] = sum(f.stat().st_size for f in (out / "features").iterdir() if f.is_file())
    # the training's initial model is made here, so that `--stop-after features` leaves everything
    # configs/train/demo.yaml needs
    _standardized_init(out, log)
    return info


def _drop_stale_features(root: Path, backbone: dict[str, Any]) -> None:
    """A feature cache from an earlier encoder (e.g. after `--redo encoder`) is of no use to the new one: the
    demo owns that folder, so it is cleared instead of failing on the backbone mismatch."""
    meta = root / "cache.json"
    if meta.is_file() and json.loads(meta.read_text()).get("backbone", {}).get("hash") != backbone["hash"]:
        shutil.rmtree(root)


def stage_train(out: Path, s: DemoSettings, log: Log) -> dict[str, Any]:

    from ..errors import CheckpointError
    from ..train.checkpoint import latest_checkpoint
    from ..train.config import TrainConfig
    from ..train.trainer import train

    n_train = len(_records(out, "train"))
    cfg = TrainConfig.model_validate(train_config_dict(s, out, out / "encoder-standardized", n_train))
    run_dir = out / "train"
    resume = latest_checkpoint(run_dir) is not None
    with small_model_threads(s.device):
        try:
            result = train(cfg, run_dir, resume=resume)
        except CheckpointError as exc:
            # a run left from earlier inputs (e.g. after `--redo mining`): its checkpoints cannot be resumed
            log(f"  previous training run does not match the current inputs, starting over ({exc})")
            shutil.rmtree(run_dir)
            result = train(cfg, run_dir, resume=False)
    ckpt = latest_checkpoint(run_dir)
    model_dir = ckpt / "model"
    (out / "model").unlink(missing_ok=True)
    (out / "model").symlink_to(model_dir.relative_to(out))
    info = result.as_dict()
    info["model"] = str(model_dir)
    info["calibration"] = _calibrate(out, s, model_dir, log)
    return {
        k: v
        for k, v in info.items()
        if k in ("steps", "total_steps", "epochs", "final_loss", "seconds", "samples_per_s", "model", "calibration")
    }


def _calibrate(out: Path, s: DemoSettings, model_dir: Path, log: Log) -> dict[str, Any]:
    """Per-finding zero-shot probabilities fitted on the TRAIN split (its reports' rule-labeler labels, never the
    cohort truth) and saved with the checkpoint (calibration.json): the library and the viewer then show
    probabilities a reader can take at face value, where the raw ones all sit near 0.5."""
    from ..api import calibrate
    from ..models.pretrained import from_pretrained

    model = from_pretrained(model_dir)
    model.source = str(model_dir)
    with small_model_threads(s.device):
        cal = calibrate(model, _records(out, "train"), model_dir, features=out / "features")
    log(f"  zero-shot probabilities calibrated on {cal.meta['n']} train reports -> {model_dir / 'calibration.json'}")
    return {"n": cal.meta["n"], "file": str(model_dir / "calibration.json")}


def _standardized_init(out: Path, log: Log) -> Path:
    """The encoder's model with the combiner's input projections standardised on the TRAIN split's features
    (`FeatureCombiner.fold_input_standardization`), whatever the encoder: raw CNN features would make the fresh
    combiner collapse, and for encoders that standardise themselves (histogram) it is close to the identity."""
    from ..features import FeatureStore, feature_statistics
    from ..models.pretrained import from_pretrained

    model = from_pretrained(out / "encoder")
    stats = feature_statistics(FeatureStore.open(out / "features"), [r.key for r in _records(out, "train")])
    model.feature_comb_image.fold_input_standardization(stats)
    log(
        f"  combiner inputs standardised on train features (mean |mean| {stats['cls_mean'].abs().mean():.3g}, "
        f"mean std {stats['cls_std'].mean():.3g})"
    )
    _save_model(model, out / "encoder-standardized")
    return out / "encoder-standardized"


def stage_evaluate(out: Path, s: DemoSettings, log: Log) -> dict[str, Any]:
    import numpy as np

    from ..eval.evaluate import evaluate
    from ..models.pretrained import from_pretrained

    model = from_pretrained(out / "model")
    valid = _records(out, "valid")  # held out: never trained on, never used for choices
    labels = np.stack([r.labels for r in valid])  # the cohort's ground-truth label table of the valid split
    metrics = evaluate(
        model, valid, ["retrieval", "zero-shot", "localization"], out / "eval", features=out / "features",
        pairs=out / "mining" / "pairs.jsonl", labels=labels, n_boot=s.n_boot, seed=0,
        title="radfinder demo: held-out synthetic valid split",
        metadata={"checkpoint": str(out / "model"), "data": {"kind": "ctrate (synthetic)", "split": "valid",
                                                              "root": str(out / "cohort")},
                  "demo_settings": s.as_dict()},
    )  # fmt: skip
    from .summary import summarize

    summary = summarize(metrics)
    summary["text_ceiling"] = text_ceiling_summary(model, from_pretrained(out / "encoder-standardized"), valid, labels,
                                                   s.n_boot)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"report": metrics["report"]["html"]}


def text_ceiling_summary(model, init, records, labels, n_boot: int) -> dict[str, Any]:
    """`metrics.json: text_ceiling`: zero-shot on each held-out volume's own report instead of its image, for the
    trained model (tower + report head, as zero-shot uses them) and for the frozen tower it started from (`init`:
    the bundled MiniLM's pooled features, no head), plus the negation probe of both."""
    from ..eval.text_ceiling import negation_probe, text_ceiling

    trained = text_ceiling(model, records, labels, n_boot=n_boot, seed=0).to_dict()
    frozen = text_ceiling(init, records, labels, space="tower", n_boot=n_boot, seed=0).to_dict()
    probe = {"trained_report_head": negation_probe(model), "trained_tower": negation_probe(model, "tower"),
             "frozen_tower": negation_probe(init, "tower")}
    return {
        "zero_shot_macro_auroc": trained["macro_auroc"],
        "zero_shot_macro_auroc_ci": trained["macro_auroc_ci"],
        "per_finding_auroc": {k: v["auroc"] for k, v in trained["per_finding"].items()},
        "frozen_zero_shot_macro_auroc": frozen["macro_auroc"],
        "frozen_zero_shot_macro_auroc_ci": frozen["macro_auroc_ci"],
        "frozen_per_finding_auroc": {k: v["auroc"] for k, v in frozen["per_finding"].items()},
        "negation_cosine": probe,
        "protocol": "mean7 zero-shot with each held-out volume's embedding replaced by its own report's; trained: "
                    "text tower + report head of the evaluated model; frozen: the initial MiniLM's pooled features",
    }


def stage_library(out: Path, s: DemoSettings, log: Log) -> dict[str, Any]:
    """A scan library of the held-out valid split (so its search precision is never measured on training data),
    searchable with `radfinder search` and browsable with `radfinder serve`."""
    from ..library import Library, build_library, finding_precision
    from ..library.build import checkpoint_hash
    from ..library.store import LibraryStore

    lib_dir = out / "library"
    if (lib_dir / "library.sqlite").is_file():  # the demo owns it: a library of an earlier model is rebuilt
        store = LibraryStore(lib_dir)
        try:
            stale = store.get_meta().get("checkpoint_hash") != checkpoint_hash(out / "model")
        finally:
            store.close()
        if stale:
            log("  the library was built with an earlier model: rebuilding it")
            shutil.rmtree(lib_dir)
    info = build_library(out / "model", _records(out, "valid"), lib_dir, show_progress=s.progress)
    lib = Library(lib_dir)
    try:
        image = finding_precision(lib, k=10, over="image")  # the model reads the scans
        report = finding_precision(lib, k=10, over="report")  # reference: the stored reports' own text
        calibrated = bool(lib.meta.get("calibrated"))
    finally:
        lib.close()
    (out / "library_precision.json").write_text(json.dumps({"image": image, "report": report}, indent=2) + "\n")
    metrics_path = out / "metrics.json"
    if metrics_path.is_file():  # the headline figures beside the others (the evaluate stage wrote the file)
        from ..preprocess.cache import atomic_write_bytes

        summary = json.loads(metrics_path.read_text())
        summary["library"] = {"studies": info["studies"], "finding_search": {
            "k": image["k"], "mean_precision_at_10": image["mean_precision"], "mean_chance": image["mean_chance"],
            "report_mean_precision_at_10": report["mean_precision"], "findings_scored": len(image["findings"]),
            "ranking": "zero-shot probability of the named finding", "calibrated": calibrated}}  # fmt: skip
        atomic_write_bytes(metrics_path, (json.dumps(summary, indent=2) + "\n").encode())

    def fmt(v):
        return "n/a" if v is None else f"{v:.2f}"

    log(f"  library: {info['studies']} held-out volumes; finding-sentence search precision@10 "
        f"{fmt(image['mean_precision'])} over scans (chance {fmt(image['mean_chance'])}), "
        f"{fmt(report['mean_precision'])} over reports")  # fmt: skip
    log(f"  browse it: radfinder serve {lib_dir}   (then open http://127.0.0.1:8000/)")
    return {"studies": info["studies"], "precision_at_10": image["mean_precision"], "chance": image["mean_chance"],
            "report_precision_at_10": report["mean_precision"], "serve": f"radfinder serve {lib_dir}"}  # fmt: skip
