"""`radfinder anatomy`: per-anatomy voxel counts and volumes of an organ segmentation."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app
from .common import print_json


@app.command("anatomy")
def anatomy(
    seg: Path = typer.Argument(..., help="Multilabel segmentation NIfTI, or a folder of <class name>.nii.gz masks."),
    groups: Path = typer.Option(
        None, "--groups", help="Anatomy-groups YAML (default: fVLM's lung/heart/esophagus/aorta)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Voxels and volume (ml) per anatomy; zero for an anatomy that is not present."""
    from ..data.anatomy import anatomy_volumes, load_anatomy_groups, read_segmentation

    g = load_anatomy_groups(groups)
    s = read_segmentation(seg, g)
    result = {"source": str(seg), "mask_hash": s.hash(), "anatomies": anatomy_volumes(s, g)}
    if json_out:
        print_json(result)
        return
    for name, v in result["anatomies"].items():
        typer.echo(f"{name}\t{v['voxels']} voxels\t{v['ml']:.1f} ml")
