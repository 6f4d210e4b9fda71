"""`radfinder evaluate`: retrieval, zero-shot, localization, Rad-ChestCT and Merlin pool protocols."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app
from .common import print_json


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory (save_pretrained layout or official export) or "
                                     "Hugging Face id ORG/NAME[@REV]."),
    task: list[str] = typer.Option(["all"], "--task", "-t",
                                   help="retrieval | zero-shot | localization | radchestct | merlin-pool | "
                                        "anatomy-zero-shot | report-generation | all (repeatable)."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (or manifest file)."),
    kind: str = typer.Option("ctrate", "--kind", "-k", help="Dataset kind: ctrate, radchestct, merlin, inspect, "
                                                            "manifest."),
    split: str = typer.Option("", "--split", help="Split (default: the kind's, e.g. CT-RATE valid)."),
    train_split: str = typer.Option("", "--train-split",
                                    help="report-generation: the split of the same dataset whose reports fit the "
                                         "generator (e.g. train); never the evaluated one."),
    features: Path | None = typer.Option(None, "--features", "-f",
                                         help="Frozen-feature cache made with this checkpoint's spec and encoder "
                                              "(default: embed raw scans)."),
    pairs: Path | None = typer.Option(None, "--pairs", help="Snippet pairs (pairs.jsonl) for localization."),
    out: Path = typer.Option(Path("eval-out"), "--out", "-o", help="Folder for metrics.json and report.html."),
    n_boot: int = typer.Option(10_000, "--n-boot", help="Bootstrap resamples for the CIs (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap and baseline seed."),
    limit: int = typer.Option(0, "--limit", help="Evaluate only the first N records (smoke runs)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json to stdout."),
) -> None:
    """Evaluate a checkpoint on a dataset; writes OUT/metrics.json and OUT/report.html."""
    from ..data.registry import dataset_kind, load_dataset
    from ..device import resolve_device
    from ..errors import ConfigError
    from ..eval.evaluate import evaluate, resolve_tasks
    from ..models.pretrained import from_pretrained

    spec = dataset_kind(kind)
    tasks = resolve_tasks(task, spec.name, pairs is not None)
    opts = {"mode": "first_all"} if spec.name == "ctrate" else {}
    records = load_dataset(spec.name, data, split or None, limit=limit or None, **opts)
    options = {}
    if train_split:
        if train_split == (split or spec.default_split):
            raise ConfigError(f"--train-split {train_split} is the evaluated split: the generator must be fitted on "
                              "other reports than those it is scored against")
        options["train_records"] = load_dataset(spec.name, data, train_split, **opts)
    model = from_pretrained(checkpoint, device=resolve_device(device))
    metrics = evaluate(
        model, records, tasks, out, features=features, pairs=pairs, n_boot=n_boot, seed=seed,
        title=f"radfinder evaluate: {Path(checkpoint).name} on {spec.name} {split or spec.default_split or ''}".strip(),
        metadata={"checkpoint": checkpoint, "data": {"kind": spec.name, "root": str(data),
                                                          "split": split or spec.default_split}},
        show_progress=not json_out, options=options,
    )  # fmt: skip
    if json_out:
        print_json(metrics)
        return
    _print_summary(metrics)


def _print_summary(m: dict) -> None:
    r = (m.get("retrieval") or {}).get("text_to_volume")
    if r:
        rec, ch = r["recall"], r["chance"]
        typer.echo(f"retrieval text->volume ({r['n_queries']} queries): "
                   + ", ".join(f"{k} {100 * v:.1f}% (chance {100 * ch[k]:.1f}%)" for k, v in rec.items())
                   + f", median rank {r['median_rank']}")
    for name, c in (m.get("classification") or {}).items():
        typer.echo(f"{name}: macro AUROC {c['macro_auroc']:.3f} over {c['n_findings']} findings")
    for name, p in (m.get("pool_retrieval") or {}).items():
        typer.echo(f"pool retrieval {name}: {p}")
    loc = m.get("localization")
    if loc:
        typer.echo(f"localization ({loc['n_snippets']} snippets): MAE {loc['model']['mae_mm']:.1f} mm "
                   f"(middle {loc['middle']['mae_mm']:.1f}, random {loc['random_expected']['mae_mm']:.1f})")
    for t, why in (m.get("metadata") or {}).get("skipped", {}).items():
        typer.echo(f"skipped {t}: {why}")
    typer.echo(f"report: {m['report']['html']}")
