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
    spec: str = typer.Option(
        None, "--spec", help="Also count on this preprocessing spec's grid (preset or YAML) and flag crop cuts."
    ),
    no_lesions: bool = typer.Option(False, "--no-lesions", help="Do not count lesion classes in their anatomy."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Voxels and volume (ml) per anatomy; zero for an anatomy that is not present."""
    from ..data.anatomy import (
        anatomy_masks_on_grid,
        anatomy_volumes,
        load_anatomy_groups,
        read_segmentation,
        touches_border,
    )

    g = load_anatomy_groups(groups)
    s = read_segmentation(seg, g)
    result = {"source": str(seg), "mask_hash": s.hash(), "anatomies": anatomy_volumes(s, g, lesions=not no_lesions)}
    if spec is not None:
        masks, _ = anatomy_masks_on_grid(s, g, spec, lesions=not no_lesions)
        for a, m in masks.items():
            result["anatomies"][a]["grid_voxels"] = int(m.sum())
            result["anatomies"][a]["cut_by_crop"] = touches_border(m)
    if json_out:
        print_json(result)
        return
    for name, v in result["anatomies"].items():
        extra = f"\t{v['grid_voxels']} grid voxels{' (cut by the crop)' if v['cut_by_crop'] else ''}" if spec else ""
        typer.echo(f"{name}\t{v['voxels']} voxels\t{v['ml']:.1f} ml{extra}")
