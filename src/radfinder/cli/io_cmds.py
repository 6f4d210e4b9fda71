"""`radfinder inspect`: read a volume the way training would and report its geometry, HU range and series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import typer

from ..errors import ConfigError
from .app import app
from .common import print_json


def _parse_window(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise ConfigError(f"--window must be LOW,HIGH in HU (e.g. -1000,1000), got {text!r}") from exc
    if not hi > lo:
        raise ConfigError(f"--window high must exceed low, got {text!r}")
    return lo, hi


def describe_volume(vol) -> dict[str, Any]:
    """The facts `inspect` reports, as JSON-ready values."""
    arr = vol.array
    info: dict[str, Any] = {
        "source": vol.meta.get("source"),
        "format": vol.meta.get("format"),
        "shape": list(vol.shape),
        "dtype": str(arr.dtype),
        "spacing": [round(s, 6) for s in vol.spacing],
        "orientation": vol.orientation,
        "affine": np.round(vol.affine, 6).tolist(),
        "hu_min": float(arr.min()),
        "hu_max": float(arr.max()),
        "hu_mean": round(float(arr.mean(dtype=np.float64)), 3),
        "series": vol.meta.get("series"),
        "other_series": vol.meta.get("other_series", []),
    }
    if "tilt_deg" in vol.meta:
        info["tilt_deg"] = round(float(vol.meta["tilt_deg"]), 4)
    for key in ("warning", "affine_from", "space", "sform_code", "qform_code"):
        if key in vol.meta:
            info[key] = vol.meta[key]
    return info


def _series_line(s: dict) -> str:
    num = "-" if s.get("number") is None else s["number"]
    desc = f" {s['description']!r}" if s.get("description") else ""
    return f"#{num}{desc} {s.get('modality', '')} {s.get('n_instances')} images, thickness {s.get('slice_thickness')}"


@app.command("inspect")
def inspect(
    path: Path = typer.Argument(..., help="NIfTI, NRRD, NPZ, DICOM file, or a DICOM folder (series or study)."),
    series: str | None = typer.Option(
        None, "--series", help="DICOM series: SeriesNumber, SeriesInstanceUID or a SeriesDescription substring."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    png: Path | None = typer.Option(None, "--out", "-o", "--png", help="Write a three-plane preview PNG here."),
    window: str = typer.Option("-1000,1000", "--window", help="HU window LOW,HIGH for the preview."),
    allow_non_ct: bool = typer.Option(False, "--allow-non-ct", help="Accept DICOM modalities other than CT."),
    allow_tilt: bool = typer.Option(False, "--allow-tilt", help="Accept gantry-tilted DICOM (sheared affine)."),
) -> None:
    """Show shape, spacing, orientation, affine (voxel -> RAS mm), HU range and the DICOM series found."""
    from ..io import load_volume

    win = _parse_window(window)
    vol = load_volume(path, series=series, allow_non_ct=allow_non_ct, allow_tilt=allow_tilt)
    info = describe_volume(vol)
    if png is not None:
        from ..io.preview import render_preview

        info["png"] = str(render_preview(vol, png, window=win))
    if json_out:
        print_json(info)
        return
    typer.echo(f"source:      {info['source']} ({info['format']})")
    typer.echo(f"shape:       {' x '.join(map(str, info['shape']))} ({info['dtype']})")
    typer.echo(f"spacing:     {', '.join(f'{s:g}' for s in info['spacing'])} mm")
    typer.echo(f"orientation: {info['orientation']}")
    typer.echo(f"HU range:    {info['hu_min']:g} .. {info['hu_max']:g} (mean {info['hu_mean']:g})")
    typer.echo("affine (voxel -> RAS mm):")
    for row in info["affine"]:
        typer.echo("  " + " ".join(f"{v:11.4f}" for v in row))
    if info.get("series"):
        typer.echo(f"series:      {_series_line(info['series'])}")
        for other in info["other_series"]:
            typer.echo(f"  also:      {_series_line(other)}")
    if info.get("tilt_deg"):
        typer.echo(f"tilt:        {info['tilt_deg']:.2f} degrees (sheared affine)")
    if info.get("warning"):
        typer.echo(f"warning:     {info['warning']}")
    if png is not None:
        typer.echo(f"preview:     {info['png']}")
