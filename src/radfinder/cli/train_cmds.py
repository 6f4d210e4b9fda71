"""`radfinder train`: train RadFinder from a YAML config (single process or under torchrun)."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app
from .common import print_json


@app.command("train")
def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Training config YAML (see configs/train/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: config.yaml, log.jsonl, tensorboard/, "
                             "checkpoints/."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a config value: a.b=c (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoints/latest (bit-exact)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary (and no progress bar)."),
) -> None:
    """Train on frozen features (or raw volumes) with SigLIP, disease-prompt and localization losses.

    Multi-process: torchrun --nproc-per-node N -m radfinder train --config ... --out ...
    """
    from ..eval.hooks import hooks_for
    from ..train import load_train_config, train

    cfg = load_train_config(config, overrides or [])
    result = train(cfg, out, resume=resume, hooks=hooks_for(cfg), show_progress=False if json_out else None)
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    if json_out:
        print_json(result.as_dict())
        return
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    rate = "" if result.samples_per_s is None else f", {result.samples_per_s:.1f} samples/s"
    typer.echo(f"trained {result.steps}/{result.total_steps} steps ({result.epochs:.2f} epochs), final loss {loss}"
               f"{rate} in {result.seconds:.1f} s -> {result.out_dir}")
    if result.last_checkpoint:
        typer.echo(f"checkpoint: {result.last_checkpoint}")
