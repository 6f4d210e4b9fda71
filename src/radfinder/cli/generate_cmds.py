"""`radfinder generate` / `generate-fit`: report generation with the offline `model` generator
(`radfinder.api.generate`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .app import app
from .common import print_json

_CKPT_HELP = "Checkpoint directory (save_pretrained layout or official export) or Hugging Face id ORG/NAME[@REV]."


@app.command("generate")
def generate_cmd(
    checkpoint: str = typer.Argument(..., help=_CKPT_HELP),
    scan: Path = typer.Argument(..., help="NIfTI/NRRD/NPZ file or DICOM folder."),
    seg: Path | None = typer.Option(None, "--seg", help="Segmentation (TotalSegmentator --ml file or per-class "
                                                        "folder): place findings only in cells holding their anatomy."),
    bank: Path | None = typer.Option(
        None, "--bank", help="Generator bank JSON (default CHECKPOINT/generator_bank.json, from `generate-fit`)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the report (JSON with --json, else text) here."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Findings and impression for a scan, from the model's zero-shot scores and depth grounding with sentences
    learned from training reports (thresholds fitted on the training split). The offline `model` generator; the
    neural prefix-LM path (radfinder.models.prefix_lm) is a tested scaffold, not this command's output."""
    from ..api import generate_report, load_model
    from ..models.hub import weights_provenance
    from ..preprocess.cache import atomic_write_bytes

    model = load_model(checkpoint, device=device)
    report = generate_report(model, scan, bank, seg=seg)
    payload = {"model": checkpoint, **weights_provenance(model), "scan": str(scan), "generator": "model",
               **report.as_dict()}
    text = f"Findings: {report.findings}\nImpression: {report.impression}\n"
    if out is not None:
        data = json.dumps(payload, indent=2) + "\n" if json_out else text
        atomic_write_bytes(out, data.encode())
    if json_out:
        print_json(payload)
        return
    typer.echo(text, nl=False)
    for p in report.present:
        where = "" if p["world_z_mm"] is None else f" at z {p['world_z_mm']:.0f} mm"
        typer.echo(f"  {p['finding']}: p {p['probability']:.3f} >= {p['threshold']:.3f}{where}")
    if out is not None:
        typer.echo(f"wrote {out}")


@app.command("generate-fit")
def generate_fit_cmd(
    checkpoint: str = typer.Argument(..., help=_CKPT_HELP),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (or manifest file)."),
    kind: str = typer.Option("ctrate", "--kind", "-k", help="Dataset kind: ctrate, manifest, ..."),
    split: str = typer.Option("train", "--split", help="The TRAINING split (never the one you evaluate on)."),
    features: Path | None = typer.Option(None, "--features", "-f", help="Feature cache of this checkpoint's encoder."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Bank JSON (default CHECKPOINT/generator_bank.json)."),
    min_df: float = typer.Option(0.2, "--min-df", help="Keep a normal/absence sentence said by this share of reports."),
    limit: int = typer.Option(0, "--limit", help="Use only the first N records (smoke runs)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    json_out: bool = typer.Option(False, "--json", help="Print a summary as JSON."),
) -> None:
    """Fit the generator bank on a training split: per-finding thresholds (F1-optimal on the split's zero-shot
    scores against its reports' rule-labeler labels) and sentence banks from its reports."""
    from ..api import fit_generator, load_model
    from ..api.generate import BANK_FILE
    from ..data.registry import dataset_kind, load_dataset
    from ..errors import ConfigError

    spec = dataset_kind(kind)
    opts = {"mode": "first_all"} if spec.name == "ctrate" else {}
    model = load_model(checkpoint, device=device)
    target = out or Path(checkpoint) / BANK_FILE
    if out is None and not Path(checkpoint).is_dir():
        raise ConfigError(f"{checkpoint} is not a checkpoint directory (a hub id's cache is not written to): give "
                          "--out for the bank")
    records = load_dataset(spec.name, data, split or None, limit=limit or None, **opts)
    bank = fit_generator(model, records, target, features=features, min_df=min_df, show_progress=not json_out)
    summary = {"bank": str(target), **bank.meta, "thresholds": bank.thresholds,
               "positive_variants": {f: len(v) for f, v in bank.positive.items()}, "absent_sentences": len(bank.absent)}
    if json_out:
        print_json(summary)
        return
    typer.echo(f"generator bank fitted on {bank.meta['n_reports']} {split} reports -> {target}")
