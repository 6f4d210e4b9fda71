"""Report commands: `mine-text` (slice references), `label` (CT-RATE finding labels), `prompts` (prompt bank)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..errors import ConfigError
from .app import app
from .common import print_json


def _read_input(file: str) -> tuple[str, str]:
    if file == "-":
        return "stdin", sys.stdin.read()
    p = Path(file)
    if not p.is_file():
        raise ConfigError(f"input file not found: {p}")
    return p.stem, p.read_text(encoding="utf-8", errors="replace")


@app.command("mine-text")
def mine_text(
    file: str = typer.Argument(..., help="Plain-text report, '-' for stdin, or a report table with --csv."),
    csv: bool = typer.Option(
        False, "--csv", help="FILE is a report table (CT-RATE CSV, Merlin, ...): one result per report."
    ),
    fmt: str = typer.Option("auto", "--format", help="Table format with --csv: auto|ctrate|merlin|inspect|ctclip."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Find slice references ("series 4 image 38", "Bild 12-15", "(4:103)") and their snippets."""
    from ..text.references import mine_references

    if csv:
        from ..text.reports import read_reports

        reports = read_reports(Path(file), fmt)
        docs = [(r.id, r.raw or f"{r.findings}\n{r.impressions}") for r in reports]
    else:
        docs = [_read_input(file)]
    results = []
    for doc_id, text in docs:
        refs = [
            {k: v for k, v in r.to_dict().items() if k in ("series", "images", "snippet", "start", "end", "text")}
            for r in mine_references(text)
        ]
        if csv and not refs:
            continue
        results.append({"id": doc_id, "references": refs})
    if json_out:
        print_json(results if csv else results[0]["references"])
        return
    for res in results:
        for r in res["references"]:
            series = "-" if r["series"] is None else r["series"]
            images = ",".join(map(str, r["images"]))
            prefix = f"{res['id']}\t" if csv else ""
            typer.echo(f"{prefix}series={series}\timages={images}\t[{r['start']}:{r['end']}]\t{r['snippet']}")
    if csv:
        typer.echo(
            f"{sum(len(r['references']) for r in results)} references in {len(results)} of {len(docs)} reports",
            err=True,
        )


@app.command("label")
def label(
    reports: Path = typer.Argument(..., help="Report table (CT-RATE report CSV by default)."),
    out: Path = typer.Option(..., "--out", "-o", help="Labels CSV to write (VolumeName + the 18 CT-RATE columns)."),
    backend: str = typer.Option("rules", "--backend", help="rules (offline) or llm (OpenAI-compatible API)."),
    fmt: str = typer.Option("auto", "--format", help="auto|ctrate|merlin|inspect|ctclip|text."),
    uncertain: str = typer.Option(
        "positive", "--uncertain", help="rules: hedged-only mentions -> positive|negative|unknown."
    ),
    llm_base_url: str = typer.Option(None, "--llm-base-url", help="Default: $RADFINDER_LLM_BASE_URL."),
    llm_model: str = typer.Option(None, "--llm-model", help="Default: $RADFINDER_LLM_MODEL."),
    llm_cache: Path = typer.Option(None, "--llm-cache", help="Answer cache folder (default: OUT's folder/.llm_cache)."),
    llm_concurrency: int = typer.Option(8, "--llm-concurrency", help="Requests in flight at once."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Write CT-RATE-style finding labels (1 present, 0 absent, -1 unknown) for every report."""
    import pandas as pd

    from ..text.findings import CTRATE_FINDINGS
    from ..text.reports import read_reports

    docs = read_reports(reports, fmt)
    if backend == "rules":
        from ..text.labeler import RuleLabeler

        try:
            lab = RuleLabeler(uncertain=uncertain)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        rows = [lab.label(r.findings, r.impressions).labels for r in docs]
    elif backend == "llm":
        from ..text.llm import LLMConfig, LLMLabeler

        cfg = LLMConfig.from_env(
            base_url=llm_base_url,
            model=llm_model,
            concurrency=llm_concurrency,
            cache_dir=llm_cache or out.parent / ".llm_cache",
        )
        rows = LLMLabeler(cfg).label_reports([r.text for r in docs])
    else:
        raise ConfigError(f"unknown backend {backend!r}; choose rules or llm")
    table = pd.DataFrame(rows, columns=list(CTRATE_FINDINGS))
    table.insert(0, "VolumeName", [r.id for r in docs])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(out)
    summary = {
        "reports": len(docs),
        "out": str(out),
        "backend": backend,
        "positives": {f: int((table[f] == 1).sum()) for f in CTRATE_FINDINGS},
        "unknown": int((table[list(CTRATE_FINDINGS)] == -1).to_numpy().sum()),
    }
    if json_out:
        print_json(summary)
    else:
        typer.echo(f"wrote {out}: {len(docs)} reports, backend {backend}")


@app.command("prompts")
def prompts(
    bank: Path = typer.Option(None, "--bank", help="User prompt YAML merged over the built-in bank."),
    finding: str = typer.Option(None, "--finding", help="Show one finding only."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Validate and show the prompt bank (disease prompts and zero-shot template pairs)."""
    from ..text.prompts import load_prompt_bank

    pb = load_prompt_bank(bank)
    names = [finding] if finding else list(pb.findings)
    data = {
        f: {
            "positive": list(pb.disease_prompts(f)[0]),
            "negative": list(pb.disease_prompts(f)[1]),
            "zero_shot": [list(p) for p in pb.zero_shot_pairs(f)],
        }
        for f in names
    }
    if json_out:
        print_json({"source": pb.source, "findings": data})
        return
    typer.echo(f"prompt bank: {pb.source} ({len(pb.findings)} findings)")
    for f, d in data.items():
        typer.echo(f"{f}\n  + " + "\n  + ".join(d["positive"]) + "\n  - " + "\n  - ".join(d["negative"]))
