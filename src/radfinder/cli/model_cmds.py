"""Model commands: `model-info`, `verify-compat`, and inference mirroring `radfinder.api` one to one (`embed`,
`classify`, `localize`), plus dataset-wide `extract-features`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ConfigError
from .app import app
from .common import print_json


@app.command("model-info")
def model_info(
    model: str = typer.Argument("radfinder-vitl", help="Preset name, model YAML, checkpoint directory, or Hugging "
                                "Face id ORG/NAME[@REV]."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a model's resolved config and parameter counts (presets are built on the meta device: no memory)."""
    import torch

    from ..models import RadFinderModel, resolve_model_config
    from ..models.hub import looks_like_hub_id, weights_provenance

    if Path(model).is_dir() or looks_like_hub_id(model):
        built = RadFinderModel.from_pretrained(model)
        cfg = built.config
    else:
        cfg = resolve_model_config(model)
        with torch.device("meta"):
            built = RadFinderModel(cfg, text_weights=False)
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in built.named_children()}
    info = {
        "name": cfg.name,
        **weights_provenance(built),
        "config": cfg.model_dump(mode="json"),
        "parameters": counts,
        "total_parameters": sum(counts.values()),
        "state_dict_tensors": len(built.state_dict()),
        # how finely the window encoder resolves depth (a coarse backbone repeats values across depth tokens)
        "depth_resolution": built.backbone_image.depth_resolution(float(built.preprocess_spec.spacing[2])),
    }
    if json_out:
        print_json(info)
        return
    typer.echo(f"model: {cfg.name}")
    for part, src in {**info.get("derived_from", {}), **info.get("hub", {})}.items():
        how = "from" if part in info.get("hub", {}) else "derived from"
        typer.echo(f"  {part} {how} {src['repo_id']} (revision {src['revision']}, commit {src['commit']})")
    for name, n in counts.items():
        typer.echo(f"  {name:<24} {n:>14,d}")
    typer.echo(f"  {'total':<24} {info['total_parameters']:>14,d}  ({info['state_dict_tensors']} tensors)")
    res = info["depth_resolution"]
    note = (f"  COARSE: {res['distinct_depth_positions_per_window']} distinct positions per window, repeated over "
            f"{res['depth_tokens_per_window']} depth tokens") if res["coarse"] else ""
    typer.echo(f"depth: {res['depth_token_mm']:g} mm per depth token, resolution {res['depth_resolution_mm']:g} mm"
               + note)


@app.command("verify-compat")
def verify_compat(
    directory: Path = typer.Argument(..., help="Reference pack directory (with manifest.json)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check every vector of a compatibility reference pack; exit 1 on any mismatch."""
    from ..compat.verify import main as verify_main

    code = verify_main([str(directory)] + (["--json"] if json_out else []))
    if code:
        raise typer.Exit(code)


# ---------------------------------------------------------------- inference (mirrors radfinder.api one to one)
_CKPT_HELP = ("Checkpoint directory (its own preprocessing spec is used), Hugging Face id ORG/NAME[@REV] (e.g. "
              "lmb-freiburg/radfinder), or a preset name (random weights).")
_DEVICE_HELP = "auto (CUDA when present), cpu, cuda, cuda:1, ..."
_CHUNK_HELP = "Windows per window-encoder forward pass (bounds memory)."


def _scan_name(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".npz"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


@app.command("embed")
def embed_cmd(
    checkpoint: str = typer.Argument(..., help=_CKPT_HELP),
    scans: list[Path] = typer.Argument(..., help="Scans: NIfTI/NRRD/NPZ files or DICOM folders."),
    text: list[str] = typer.Option([], "--text", help="Text to embed too (repeatable); reports cosine similarity."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write all embeddings to this .npz."),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
    chunk_size: int = typer.Option(8, "--chunk-size", help=_CHUNK_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Retrieval, disease and per-depth-cell embeddings of scans (and text embeddings of --text)."""
    from ..api import encode_text, encode_volume, load_model
    from ..api.output import cosine_matrix, save_embeddings
    from ..models.hub import weights_provenance

    model = load_model(checkpoint, device=device)
    names = [_scan_name(p) for p in scans]
    encodings = [encode_volume(model, p, chunk_size=chunk_size) for p in scans]
    text_emb = encode_text(model, text) if text else None
    if out is not None:
        save_embeddings(out, names, encodings, text, text_emb)
    info = {
        "model": checkpoint,
        **weights_provenance(model),
        "device": str(model.criterion.t.device),
        "spec_hash": model.preprocess_spec.hash(),
        "scans": [{"scan": n, **e.summary()} for n, e in zip(names, encodings, strict=True)],
        "texts": [{"text": t, "embedding": v.tolist()} for t, v in zip(text, text_emb, strict=True)] if text else [],
        "similarity": cosine_matrix([e.retrieval for e in encodings], text_emb).tolist() if text else None,
        "out": str(out) if out is not None else None,
    }
    if json_out:
        print_json(info)
        return
    for s in info["scans"]:
        typer.echo(f"{s['scan']}: grid {tuple(s['grid'])}, {s['n_valid_depth_cells']} depth cells, "
                   f"embedding dim {len(s['retrieval'])}")  # fmt: skip
    if text:
        typer.echo("cosine(scan retrieval embedding, text):")
        for n, row in zip(names, info["similarity"], strict=True):
            typer.echo(f"  {n}: " + "  ".join(f"{v:+.4f}" for v in row))
    if out is not None:
        typer.echo(f"wrote {out}")


@app.command("classify")
def classify_cmd(
    checkpoint: str = typer.Argument(..., help=_CKPT_HELP),
    scan: Path = typer.Argument(..., help="NIfTI/NRRD/NPZ file or DICOM folder."),
    finding: list[str] = typer.Option([], "--finding", help="Finding name (repeatable); default the 18 CT-RATE."),
    prompts: Path | None = typer.Option(None, "--prompts", help="Prompt-bank YAML merged over the built-in one."),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
    chunk_size: int = typer.Option(8, "--chunk-size", help=_CHUNK_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Zero-shot probability of each finding (mean7 prompts: softmax over the two cosines)."""
    from ..api import classify, load_model
    from ..api.output import scores_table
    from ..models.hub import weights_provenance

    model = load_model(checkpoint, device=device)
    scores = classify(model, scan, finding or None, prompts, chunk_size=chunk_size)
    if json_out:
        print_json({"model": checkpoint, **weights_provenance(model), "scan": str(scan),
                    "spec_hash": model.preprocess_spec.hash(), "protocol": "mean7",
                    "calibrated": bool(scores and scores[0].calibrated),
                    "findings": [s.as_dict() for s in scores]})  # fmt: skip
        return
    typer.echo(scores_table(scores))


@app.command("calibrate")
def calibrate_cmd(
    checkpoint: str = typer.Argument(..., help=_CKPT_HELP),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (or manifest file)."),
    kind: str = typer.Option("ctrate", "--kind", "-k", help="Dataset kind: ctrate, manifest, ..."),
    split: str = typer.Option("train", "--split", help="The TRAINING split (never the one you evaluate on)."),
    features: Path | None = typer.Option(None, "--features", "-f", help="Feature cache of this checkpoint's encoder."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for calibration.json (default CHECKPOINT, "
                                                               "where load_model reads it)."),
    limit: int = typer.Option(0, "--limit", help="Use only the first N records (smoke runs)."),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the calibration as JSON."),
) -> None:
    """Fit per-finding zero-shot probabilities (Platt scale and bias on the margin) on a training split against
    its reports' rule-labeler labels; saved as CHECKPOINT/calibration.json, used by classify, libraries and serve."""
    from ..api import calibrate, load_model
    from ..data.registry import dataset_kind, load_dataset

    if not Path(checkpoint).is_dir():
        raise ConfigError(f"{checkpoint} is not a checkpoint directory")
    spec = dataset_kind(kind)
    opts = {"mode": "first_all"} if spec.name == "ctrate" else {}
    model = load_model(checkpoint, device=device)
    records = load_dataset(spec.name, data, split or None, limit=limit or None, **opts)
    target = Path(out) if out is not None else Path(checkpoint)
    target.mkdir(parents=True, exist_ok=True)
    cal = calibrate(model, records, target, features=features, show_progress=not json_out)
    if json_out:
        print_json({"calibration": str(target / "calibration.json"), **cal.to_json()})
        return
    typer.echo(f"calibration fitted on {cal.meta['n']} {split} studies -> {target / 'calibration.json'}")
    for f, a, b in zip(cal.findings, cal.scale, cal.bias, strict=True):
        typer.echo(f"  {f:<36} scale {a:>9.2f}  bias {b:>+7.2f}  ({cal.meta['positives'][f]} positive reports)")


@app.command("localize")
def localize_cmd(
    checkpoint: str = typer.Argument(..., help=_CKPT_HELP),
    scan: Path = typer.Argument(..., help="NIfTI/NRRD/NPZ file or DICOM folder."),
    sentence: list[str] = typer.Option(..., "--sentence", help="Sentence to localize (repeatable)."),
    png: Path | None = typer.Option(
        None, "--out", "-o", "--png", help="Figure: coronal view + depth profile (FILE_i per sentence)."
    ),
    temperature: float | None = typer.Option(
        None, "--temperature", help="Softmax temperature (default: the model's localization_tau)."
    ),  # fmt: skip
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
    chunk_size: int = typer.Option(8, "--chunk-size", help=_CHUNK_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Most likely depth of each sentence in the scan, in mm and as a slice of the original scan."""
    from ..api import encode_volume, load_model, localize
    from ..api.model import as_volume
    from ..api.output import locations_table, plot_locations
    from ..models.hub import weights_provenance

    model = load_model(checkpoint, device=device)
    volume = as_volume(scan)
    enc = encode_volume(model, volume, chunk_size=chunk_size)
    locs = localize(model, enc, sentence, temperature=temperature)
    figures = plot_locations(volume, enc, locs, png, scan_id=_scan_name(scan)) if png is not None else []
    if json_out:
        print_json({"model": checkpoint, **weights_provenance(model), "scan": str(scan), "spec_hash": enc.spec_hash,
                    "grid": list(enc.grid),
                    "scoring": "softmax(cos / temperature) over valid depth cells",
                    "sentences": [loc.as_dict() for loc in locs], "png": [str(f) for f in figures]})  # fmt: skip
        return
    typer.echo(locations_table(locs))
    for f in figures:
        typer.echo(f"wrote {f}")


@app.command("extract-features")
def extract_features_cmd(
    inputs: list[Path] = typer.Argument(None, help="Scans or folders (NIfTI/NRRD/NPZ, DICOM series/studies)."),
    out: Path = typer.Option(..., "--out", "-o", help="Feature-cache directory (created; reruns resume)."),
    model: str | None = typer.Option(None, "--model", help="Window encoder of a checkpoint (folder or Hugging Face "
                                     "id ORG/NAME[@REV]) or preset."),
    backbone: str | None = typer.Option(None, "--backbone", help="Named backbone instead: astra-resnet152."),
    spectre: str | None = typer.Option(None, "--spectre", help="With a preset --model (radfinder-vitl): its window "
                                       "encoder from SPECTRE's backbone file (folder or hub id cclaess/SPECTRE)."),
    list_file: Path | None = typer.Option(None, "--list", help="File with one input path per line."),
    ctrate: Path | None = typer.Option(None, "--ctrate", help="CT-RATE dataset root (lists the volumes itself)."),
    split: str = typer.Option("valid", "--split", help="CT-RATE split with --ctrate: train or valid."),
    spec: str | None = typer.Option(
        None, "--spec", help="Preprocessing spec for presets/backbones (a checkpoint always uses its own)."
    ),  # fmt: skip
    batch_size: int = typer.Option(8, "--batch-size", help="Windows per forward pass."),
    shard: str | None = typer.Option(None, "--shard", help="i/n: this process's share (default torchrun's rank)."),
    device: str = typer.Option("auto", "--device", help="auto: cuda:LOCAL_RANK when CUDA is present, else cpu."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the encoder (long CUDA runs)."),
    spatial: bool = typer.Option(False, "--spatial", help="Keep the coarse spatial token grid (light3d encoders)."),
    masks: str | None = typer.Option(
        None, "--masks", help="Segmentations for anatomy coverage (fVLM): a folder (<volume file name>, <key>.nii.gz "
        "or <key>/ per-class files) or 'auto' (the cohort's masks/ beside the volumes); implies --spatial."),
    groups: Path | None = typer.Option(None, "--groups", help="Anatomy-groups YAML (default: lung, heart, "
                                       "esophagus, aorta)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Run a frozen window encoder over a dataset into a feature cache (works under torchrun)."""
    from ..api.extract import extract_dataset
    from ..features import parse_shard

    if split not in ("train", "valid"):
        raise ConfigError(f"--split must be train or valid, got {split!r}")
    summary, store = extract_dataset(
        out, inputs or [], list_file=list_file, ctrate=ctrate, split=split, model=model, backbone=backbone,
        spec=spec, batch_size=batch_size, shard=parse_shard(shard), device=device, show_progress=not json_out,
        compile=compile_, spatial=spatial, masks=masks, groups=groups, spectre=spectre,
    )  # fmt: skip
    info = {"out": str(store.root), "spec_hash": store.spec.hash(), "backbone": store.backbone,
            "entries_in_cache": len(store), **summary.as_dict()}  # fmt: skip
    if json_out:
        print_json(info)
    else:
        typer.echo(f"{info['out']}: wrote {info['written']}, skipped {info['skipped_existing']} existing, "
                   f"{len(info['failed'])} failed ({info['windows']} windows in {info['seconds']} s, "
                   f"shard {info['shard']}); {info['entries_in_cache']} entries in the cache")  # fmt: skip
        if masks is not None:
            typer.echo(f"  anatomy coverage written for {info['anatomy_written']} scans, {info['no_mask']} without "
                       "a mask")
        for key, err in summary.failed.items():
            typer.echo(f"  failed {key}: {err}", err=True)
    if summary.failed:
        raise typer.Exit(1)
