"""`radfinder check-data`: validate a dataset (CT-RATE, Rad-ChestCT, Merlin, INSPECT or a manifest)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import typer

from ..errors import ConfigError
from .app import app
from .common import print_json


def parse_options(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; VALUE is read as JSON when it parses (numbers, true/false, lists), else kept as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--opt must be KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _print_text(result, max_list: int, strict: bool) -> None:
    s = result.summary
    splits = ", ".join(f"{k}: {v}" for k, v in result.splits.items())
    typer.echo(f"{result.kind} at {result.root}: {s['n_records']} volumes ({splits}), {s['n_patients']} patients, "
               f"{s['n_with_report']} with report text, {s['n_with_labels']} with labels")  # fmt: skip
    if result.deep:
        typer.echo(f"read {s['n_read']} volumes, {s['n_unreadable']} unreadable")
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for p in result.problems:
        groups[(p.severity, p.code)].append(p)
    for (sev, code), items in sorted(groups.items()):
        typer.echo(f"{sev.upper()} {code}: {len(items)}")
        for p in items[:max_list]:
            where = p.path or p.key or ""
            typer.echo(f"  {where}{': ' if where else ''}{p.message}")
        if len(items) > max_list:
            typer.echo(f"  ... and {len(items) - max_list} more (--json lists all)")
    if not result.deep:
        typer.echo("(shallow check: run with --deep to read every volume)")
    code = result.exit_code(strict)
    typer.echo("OK" if code == 0 else f"FAILED: {len(result.errors)} errors, {len(result.warnings)} warnings")


@app.command("check-data")
def check_data(
    kind: str = typer.Argument(..., help="ctrate, radchestct, merlin, inspect or manifest."),
    root: Path = typer.Argument(..., help="Dataset folder (for manifest: the CSV/JSONL file)."),
    split: str | None = typer.Option(None, "--split", "-s", help="Check one split (default: the whole dataset)."),
    deep: bool = typer.Option(False, "--deep", help="Read every volume: unreadable, constant, implausible HU."),
    workers: int = typer.Option(0, "--workers", "-w", help="Processes for --deep (0: up to 4)."),
    opt: list[str] = typer.Option([], "--opt", help="Loader option KEY=VALUE (repeatable), e.g. no_chest=drop_study."),
    strict: bool = typer.Option(False, "--strict", help="Warnings also give a non-zero exit code."),
    max_list: int = typer.Option(20, "--max-list", help="Problems listed per kind in the text output."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary with every problem."),
) -> None:
    """List missing, unreadable or broken files, report/label coverage, duplicate keys and patient leaks.

    Exit code 0 when no errors were found, 1 when some were (or warnings with --strict), 2 on bad arguments."""
    from ..data.check import check_dataset

    result = check_dataset(
        kind, root, split, deep=deep, workers=workers or None, show_progress=not json_out, **parse_options(opt)
    )
    if json_out:
        print_json(result.to_json())
    else:
        _print_text(result, max_list, strict)
    code = result.exit_code(strict)
    if code:
        raise typer.Exit(code)
