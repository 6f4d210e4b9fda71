"""`radfinder model-info` and `radfinder verify-compat`: inspect a model, check a reference pack."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app
from .common import print_json


@app.command("model-info")
def model_info(
    model: str = typer.Argument("radfinder-vitl", help="Preset name, model YAML, or checkpoint directory."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a model's resolved config and parameter counts (presets are built on the meta device: no memory)."""
    import torch

    from ..models import RadFinderModel, resolve_model_config

    path = Path(model)
    if path.is_dir():
        built = RadFinderModel.from_pretrained(path)
        cfg = built.config
    else:
        cfg = resolve_model_config(model)
        with torch.device("meta"):
            built = RadFinderModel(cfg, text_weights=False)
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in built.named_children()}
    info = {"name": cfg.name, "config": cfg.model_dump(mode="json"), "parameters": counts,
            "total_parameters": sum(counts.values()), "state_dict_tensors": len(built.state_dict())}
    if json_out:
        print_json(info)
        return
    typer.echo(f"model: {cfg.name}")
    for name, n in counts.items():
        typer.echo(f"  {name:<24} {n:>14,d}")
    typer.echo(f"  {'total':<24} {info['total_parameters']:>14,d}  ({info['state_dict_tensors']} tensors)")


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
