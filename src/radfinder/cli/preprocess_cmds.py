"""`radfinder preprocess` (one volume -> .npz) and `radfinder preprocess-dataset` (a dataset -> cache folder)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import typer

from ..errors import ConfigError
from .app import app
from .common import print_json


@app.command("preprocess")
def preprocess_cmd(
    path: Path = typer.Argument(..., help="NIfTI/NRRD/MHA file or DICOM series/study folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npz (image, affine, grid, spec, spec_hash)."),
    spec: str = typer.Option("radfinder", "--spec", help="Preset name or YAML/JSON spec file."),
    series: str | None = typer.Option(None, "--series", help="DICOM series to use when a folder holds several."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Preprocess one volume with a spec and save the result."""
    import numpy as np

    from ..preprocess import apply_spec, load_source, resolve_spec
    from ..preprocess.cache import atomic_write_bytes

    if out.suffix != ".npz":  # before minutes of work, not after
        raise ConfigError(f"--out must end in .npz, got {out}")
    sp = resolve_spec(spec)
    t0 = time.perf_counter()
    vol = load_source(path, series)
    t1 = time.perf_counter()
    pre = apply_spec(vol, sp)
    t2 = time.perf_counter()
    buf = io.BytesIO()
    np.savez(
        buf,
        image=pre.image,
        affine=pre.affine,
        grid=np.asarray(pre.grid, dtype=np.int64),
        spec=np.asarray(sp.canonical_json()),
        spec_hash=np.asarray(sp.hash()),
    )
    atomic_write_bytes(out, buf.getvalue())
    t3 = time.perf_counter()
    info = {
        "source": str(path),
        "out": str(out),
        "spec": sp.name,
        "spec_hash": sp.hash(),
        "source_shape": list(vol.shape),
        "source_spacing": [round(s, 4) for s in vol.spacing],
        "source_orientation": vol.orientation,
        "spaced_shape": list(pre.spaced_shape),
        "crop_start": list(pre.crop_start),
        "shape": list(pre.image.shape),
        "spacing": [round(s, 4) for s in pre.spacing],
        "grid": list(pre.grid),
        "n_windows": pre.n_windows,
        "dtype": str(pre.image.dtype),
        "seconds": {"load": round(t1 - t0, 3), "preprocess": round(t2 - t1, 3), "write": round(t3 - t2, 3)},
    }
    if json_out:
        print_json(info)
    else:
        typer.echo(
            f"{path} {info['source_orientation']} {tuple(vol.shape)} -> {tuple(pre.image.shape)} "
            f"grid {tuple(pre.grid)} ({pre.n_windows} windows) in {t2 - t0:.2f} s -> {out}"
        )


@app.command("preprocess-dataset")
def preprocess_dataset_cmd(
    inputs: list[Path] = typer.Argument(None, help="Files and/or folders (NIfTIs, DICOM study folders)."),
    list_file: Path | None = typer.Option(None, "--list", help="Text file with one input path per line."),
    out: Path = typer.Option(..., "--out", "-o", help="Cache folder (entries go to OUT/<spec hash>/)."),
    spec: str = typer.Option("radfinder", "--spec", help="Preset name or YAML/JSON spec file."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes."),
    shard: str | None = typer.Option(None, "--shard", help="i/n: process only shard i of n (round-robin by name)."),
    series: str | None = typer.Option(None, "--series", help="DICOM series to pick in every study."),
    content_hash: bool = typer.Option(False, "--content-hash", help="Key entries by file content, not path+mtime."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Preprocess a whole dataset into a resumable, shardable cache. Exit code 1 if any volume failed."""
    from ..preprocess import discover_sources, parse_shard, preprocess_dataset, read_list_file, resolve_spec

    items = list(inputs or [])
    if list_file is not None:
        items += read_list_file(list_file)
    if not items:
        raise ConfigError("give input files/folders or --list FILE")
    sp = resolve_spec(spec)
    sources = discover_sources(items)
    report = preprocess_dataset(
        sources,
        out,
        sp,
        workers=workers,
        shard=parse_shard(shard),
        content_hash=content_hash,
        series=series,
        show_progress=not json_out,
    )
    summary = report.summary()
    summary["found"] = len(sources)
    if json_out:
        print_json(summary)
    else:
        typer.echo(
            f"{summary['written']} written, {summary['cached']} already cached, {summary['failed']} failed "
            f"in {summary['seconds']:.1f} s -> {report.cache_dir / report.spec_hash}"
        )
        for f in summary["failures"]:
            typer.echo(f"  FAILED {f['source']}: {f['error']}", err=True)
        if report.failures_path:
            typer.echo(f"failures listed in {report.failures_path}", err=True)
    if not report.ok:
        # SystemExit, not typer.Exit: click swallows Exit's code when main() runs it with standalone_mode=False.
        raise SystemExit(1)
