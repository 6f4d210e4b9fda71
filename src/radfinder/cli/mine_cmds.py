"""`radfinder mine`: snippet -> depth-cell training pairs from the slice references of a report dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app
from .common import print_json


@app.command("mine")
def mine_cmd(
    reports: list[Path] = typer.Option(
        ..., "--reports", help="CT-RATE style reports CSV (VolumeName + text columns); repeat for several splits."
    ),
    dicom_root: Path = typer.Option(..., "--dicom-root", help="Folder holding one DICOM folder per study."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSON lines, one per (reference, volume, depth cell)."),
    dataset_root: Path | None = typer.Option(
        None, "--dataset-root", help="CT-RATE dataset folder with the NIfTI volumes (default: found from --reports)."
    ),
    spec: str = typer.Option("radfinder", "--spec", help="Preprocessing preset name or YAML/JSON spec file."),
    lang: str = typer.Option("en", "--lang", help="en: Findings_EN/Impressions_EN; de: Befund/Beurteilung."),
    dicom_pattern: str = typer.Option(
        "{study}", "--dicom-pattern", help="Study folder below --dicom-root; may use {study} and {patient}."
    ),
    dicom_map: Path | None = typer.Option(
        None, "--dicom-map", help="CSV (study,folder) or JSON {study: folder} overriding --dicom-pattern."
    ),
    multi: str = typer.Option(
        "each", "--multi", help="References naming several images: 'each' distinct cell, or only the 'first'."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON (no progress bar)."),
) -> None:
    """Mine slice references ("series 4, image 38"), look them up in each study's DICOM headers and place them
    in the depth cells of every training volume of the study (geometric, through world coordinates)."""
    from ..data.mining import mine_dataset

    summary = mine_dataset(
        reports, dicom_root, dataset_root=dataset_root, spec=spec, out=out, lang=lang, dicom_pattern=dicom_pattern,
        dicom_map=dicom_map, multi=multi, show_progress=not json_out,
    )  # fmt: skip
    if json_out:
        print_json(summary.to_json())
        return
    s = summary
    typer.echo(f"reports read: {s.reports} ({s.rows} rows, {s.volumes} volumes found), language {s.lang}")
    typer.echo(f"references found: {s.references}; resolved: {s.resolved}; pairs written: {s.pairs} -> {s.out}")
    dropped = sum(s.dropped.values())
    typer.echo(f"dropped: {dropped}" + "".join(f"\n  {k}: {v}" for k, v in sorted(s.dropped.items())))
    for p in s.problems:
        typer.echo(f"note: {p}")
