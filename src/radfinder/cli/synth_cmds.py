"""`radfinder synth`: generate the built-in synthetic CT cohort (DICOM, CT-RATE NIfTI layout, EN/DE reports)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ..errors import ConfigError
from .app import app
from .common import print_json


@app.command("synth")
def synth(
    out_arg: Path | None = typer.Argument(None, metavar="[OUT]", help="Output folder (the older form of --out)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output folder (created; must be empty unless --overwrite)."
    ),
    studies: int = typer.Option(20, "--studies", "-n", help="Number of studies."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical output."),
    res: str = typer.Option("demo", "--res", help="demo (about 2 mm in-plane, small) or full (512 x 512)."),
    preview: bool = typer.Option(False, "--preview", help="Write PNG galleries of a few studies to OUT/preview."),
    n_preview: int = typer.Option(6, "--n-preview", help="How many studies --preview draws."),
    workers: int = typer.Option(0, "--workers", "-w", help="Worker processes (0: one per CPU core)."),
    valid_fraction: float = typer.Option(0.2, "--valid-fraction", help="Share of patients in the valid split."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous cohort in OUT."),
    stream: str = typer.Option("cohort", "--stream", help="cohort (DICOM, NIfTI, reports, masks, truth), or "
                               "pretrain / probe: volumes, masks and truth only, from a random stream of their own "
                               "that no cohort seed reaches (encoder pre-training, feature probes)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Render synthetic chest CTs with CT-RATE findings, slice-referencing reports and exact ground truth."""
    from ..data.synth import make_cohort

    if out is not None and out_arg is not None and out != out_arg:
        raise ConfigError(f"two output folders given: {out_arg} and --out {out}; give one")
    out = out if out is not None else out_arg
    if out is None:
        raise ConfigError("no output folder: give --out DIR")
    t0 = time.perf_counter()
    summary = make_cohort(
        out,
        studies,
        seed,
        res=res,
        preview=preview,
        n_preview=n_preview,
        workers=workers or None,
        valid_fraction=valid_fraction,
        overwrite=overwrite,
        show_progress=not json_out,
        stream=stream,
    )
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    if json_out:
        print_json(summary)
        return
    typer.echo(
        f"{summary['n_studies']} studies ({summary['n_patients']} patients, {summary['n_volumes']} NIfTI volumes, "
        f"{summary['n_references']} slice references) in {summary['seconds']} s, "
        f"{summary['bytes'] / 1e6:.1f} MB -> {summary['out']}"
    )
