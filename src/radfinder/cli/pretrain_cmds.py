"""`radfinder pretrain-encoder`: pre-train a window encoder on dense mask targets (single process or torchrun)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ..config import load_config
from ..train.pretrain import pretrain_encoder
from ..train.pretrain_config import PretrainConfig
from .app import app
from .common import print_json


@app.command("pretrain-encoder")
def pretrain_encoder_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Pre-training config YAML (see configs/pretrain/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: config.yaml, log.jsonl, cohort/, windows/, "
                             "checkpoints/, encoder/."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a config value: a.b=c (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoints/latest (bit-exact)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary (and no progress bar)."),
) -> None:
    """Pre-train the light3d window encoder on organ and lesion masks; the frozen result lands in OUT/encoder.

    Multi-process: torchrun --nproc-per-node N -m radfinder pretrain-encoder --config ... --out ...
    """
    items = list(overrides or [])
    if json_out:
        items.append("logging.progress=false")
    cfg = load_config(PretrainConfig, config, items)
    result = pretrain_encoder(cfg, out, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if json_out:
        print_json(result)
        return
    typer.echo(f"pre-trained {result['steps']}/{result['total_steps']} steps on {result['windows']} windows "
               f"({result['volumes']} volumes), final loss {result['final'].get('loss', float('nan')):.4f} "
               f"in {result['seconds']:.0f} s -> {result['encoder']}")  # fmt: skip
