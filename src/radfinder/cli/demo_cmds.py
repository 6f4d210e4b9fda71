"""`radfinder demo`: the whole pipeline on the built-in synthetic cohort (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..demo.config import DemoSettings
from .app import app
from .common import print_json


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Output folder (re-running resumes it)."),
    studies: int = typer.Option(DemoSettings.studies, "--studies", "-n", help="Synthetic studies to generate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the cohort and of every random choice."),
    encoder: str = typer.Option(
        DemoSettings.encoder,
        "--encoder",
        help="Frozen window encoder: histogram+filterbank (regional HU histograms and a multi-scale Hessian filter "
        "bank side by side, weight-free, standardised on the train split; the best on the linear probe), histogram, "
        "filterbank, pretrained-synthetic (the shipped light3d encoder, pre-trained on a synthetic cohort of "
        "its own stream, disjoint from every demo seed), astra (the pretrained ASTRA 3D ResNet-152 of "
        "radfinder[astra]; about 1 s a window on 2 CPU cores, use a GPU) and random (light3d at its seeded "
        "initialisation: a control).",
    ),
    device: str = typer.Option(
        "auto", "--device", help="Device of feature extraction and training: auto (CUDA when present), cpu, cuda ..."
    ),
    epochs: float = typer.Option(DemoSettings.train_epochs, "--epochs", help="Training epochs (combiner, heads)."),
    max_steps: int = typer.Option(0, "--max-steps", help="Stop training after this many steps (0: no limit)."),
    text_train: str = typer.Option(
        DemoSettings.text_train, "--text-train",
        help="What of the MiniLM text tower trains: frozen (only its projection heads), top<k> (its last k layers, "
        "the frozen ones below computed once per text), lora or all.",
    ),
    n_boot: int = typer.Option(
        DemoSettings.n_boot, "--n-boot", help="Bootstrap resamples for the confidence intervals."
    ),
    workers: int = typer.Option(0, "--workers", "-w", help="Processes for the cohort (0: one per CPU core)."),
    report_generation: bool = typer.Option(
        True, "--report-generation/--no-report-generation",
        help="Report-generation stage: generator bank on the train split, generated reports for the valid split, "
        "BLEU/ROUGE-L/BERTScore/clinical-efficacy of the model generator and two baselines.",
    ),
    methods: str = typer.Option(
        DemoSettings.methods, "--methods",
        help="Training methods compared on the held-out split, comma-separated, RadFinder first: radfinder, "
        "scale-vlp, fvlm, or a '+' combination (radfinder+fvlm trains all their objectives in one run). Each "
        "method trains on the same cohort and frozen features; metrics.json gets methods.<method>.<task>.<metric> "
        "and DIR/methods.md the table. Changing it re-runs the comparison only.",
    ),
    redo: list[str] = typer.Option([], "--redo", help="Run this stage (and every later one) again."),
    stop_after: str = typer.Option("", "--stop-after", help="Stop after this stage."),
    json_out: bool = typer.Option(False, "--json", help="Print the stage timings and summary as JSON."),
) -> None:
    """Synthetic cohort -> preprocessing -> reference mining -> labels -> frozen features -> training ->
    held-out evaluation -> HTML report, each stage resumable and timed."""
    from ..demo import run_demo

    settings = DemoSettings(
        studies=studies,
        seed=seed,
        encoder=encoder,
        device=device,
        train_epochs=epochs,
        progress=not json_out,
        max_steps=max_steps or None,
        text_train=text_train,
        n_boot=n_boot,
        workers=workers or None,
        report_generation=report_generation,
        methods=methods,
    )
    result = run_demo(
        out, settings, redo=redo, stop_after=stop_after or None, log=(lambda m: None) if json_out else typer.echo
    )
    if json_out:
        print_json(result)
