"""`radfinder library build/add/index/info`, `radfinder search` and `radfinder serve`."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app
from .common import print_json, stderr

library_app = typer.Typer(help="Build and maintain a searchable scan library (FAISS + SQLite).", no_args_is_help=True)
app.add_typer(library_app, name="library")

_KIND = "Dataset kind: ctrate, radchestct, merlin, inspect, manifest."
_SPLIT = "Split, or 'all' (default): every split of the kind."


def _print_build(info: dict) -> None:
    typer.echo(f"library {info['library']}: {info['added']} added, {info['skipped_existing']} already there, "
               f"{len(info['failed'])} failed; {info['studies']} studies (shard {info['shard']}, "
               f"{info['seconds']:.1f} s)")  # fmt: skip
    for key, why in info["failed"].items():
        typer.echo(f"  failed {key}: {why}")
    if info.get("indexes") is None:
        typer.echo(f"  index not rebuilt: {info.get('waiting_for')} studies of other shards still missing")


@library_app.command("build")
def build_cmd(
    checkpoint: str = typer.Argument(..., help="Checkpoint directory (save_pretrained layout or official export) or "
                                     "Hugging Face id ORG/NAME[@REV]."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (or manifest file)."),
    out: Path = typer.Option(..., "--out", "-o", help="Library folder (created; an existing one is resumed)."),
    kind: str = typer.Option("ctrate", "--kind", "-k", help=_KIND),
    split: str = typer.Option("all", "--split", help=_SPLIT),
    index: str = typer.Option("auto", "--index", help="auto | flat (exact) | pq | hnsw | ivf (see docs/LIBRARY.md)."),
    limit: int = typer.Option(0, "--limit", help="Only the first N volumes (smoke runs)."),
    shard: str | None = typer.Option(None, "--shard", help="i/n: this process's share (default torchrun's rank)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Embed every volume of a dataset into a library; resumable after a kill, shardable under torchrun.
    Exit code 1 if any volume failed (the others are kept)."""
    from ..features import parse_shard
    from ..library import build_library

    info = build_library(checkpoint, data, out, kind=kind, split=split, limit=limit or None, index=index,
                         shard=parse_shard(shard), device=device, show_progress=not json_out)  # fmt: skip
    print_json(info) if json_out else _print_build(info)
    if info["failed"]:
        raise typer.Exit(1)


@library_app.command("add")
def add_cmd(
    library: Path = typer.Argument(..., help="Library folder."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (or manifest file)."),
    kind: str = typer.Option("ctrate", "--kind", "-k", help=_KIND),
    split: str = typer.Option("all", "--split", help=_SPLIT),
    limit: int = typer.Option(0, "--limit", help="Only the first N volumes."),
    shard: str | None = typer.Option(None, "--shard", help="i/n: this process's share (default torchrun's rank)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Add a dataset's volumes to a library, with the checkpoint it was built with (its hash is checked)."""
    from ..features import parse_shard
    from ..library import add_to_library

    info = add_to_library(library, data, kind=kind, split=split, limit=limit or None, shard=parse_shard(shard),
                          device=device, show_progress=not json_out)  # fmt: skip
    print_json(info) if json_out else _print_build(info)
    if info["failed"]:
        raise typer.Exit(1)


@library_app.command("index")
def index_cmd(
    library: Path = typer.Argument(..., help="Library folder."),
    index: str = typer.Option("", "--index", help="auto | flat | pq | hnsw | ivf (default: the library's choice)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Rebuild the FAISS indexes from the library's SQLite rows (e.g. to switch to hnsw)."""
    from ..library import rebuild_index

    info = rebuild_index(library, index or None)
    if json_out:
        print_json(info)
        return
    for over, v in info.items():
        typer.echo(f"{over}: {v['vectors']} vectors, {v['kind']} index")


@library_app.command("info")
def info_cmd(
    library: Path = typer.Argument(..., help="Library folder."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """What a library holds: studies, checkpoint and its hash, indexes, failed volumes."""
    from ..library import Library

    info = Library(library).info()
    if json_out:
        print_json(info)
        return
    typer.echo(f"{info['studies']} studies; checkpoint {info['checkpoint']} (hash {info['checkpoint_hash']}); "
               f"indexes {info['indexes']}")  # fmt: skip
    if info.get("hub"):
        typer.echo(f"released model {info['hub']['repo_id']} (revision {info['hub']['revision']}, commit "
                   f"{info['hub']['commit']})")
    for key, why in info["failures"].items():
        typer.echo(f"  failed {key}: {why.splitlines()[0]}")


@app.command("search")
def search_cmd(
    library: Path = typer.Argument(..., help="Library folder."),
    text: str | None = typer.Argument(None, help="Query sentence, e.g. 'right lower lobe consolidation'."),
    like: Path | None = typer.Option(None, "--like", help="Find studies like this scan instead of a sentence."),
    top: int = typer.Option(10, "--top", "-k", help="Number of results (1-100)."),
    filter_: list[str] = typer.Option([], "--filter", help="FINDING>0.5 on the zero-shot probability (repeatable)."),
    over: str = typer.Option("image", "--over", help="image: compare with the scans; report: with stored reports."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    json_out: bool = typer.Option(False, "--json", help='Print {"results": [...], "ranking": ...} as JSON (the '
                                                          "API's answer)."),
) -> None:
    """Ranked studies for a sentence (or a scan), best depth cell and zero-shot finding probabilities. A sentence
    that names a finding ("Cardiomegaly.", "No pleural effusion.") is ranked by that finding's zero-shot
    probability (calibrated when the checkpoint has a calibration); other text by cosine similarity."""
    from ..errors import ConfigError
    from ..library import Library

    if (text is None) == (like is None):
        raise ConfigError("give either a query TEXT or --like SCAN")
    lib = Library(library, device=device)
    res = lib.search(text, k=top, filters=filter_, over=over) if like is None else lib.search_like(like, top, filter_)
    if json_out:
        from ..library.search import search_answer

        print_json(search_answer(res))
        return
    if res.get("ranking") == "finding":
        what = res["finding"] if res["present"] else f"no {res['finding']}"
        typer.echo(f"ranked by p({what}) from the scans' zero-shot scores"
                   + ("" if res["calibrated"] else " (uncalibrated: run `radfinder calibrate`)"))  # fmt: skip
    for n, r in enumerate(res["results"], 1):
        where = f"  depth {r['depth_mm']:.0f} mm (slice {r['slice']})" if r["depth_mm"] is not None else ""
        top3 = sorted(r["findings"].items(), key=lambda kv: -kv[1])[:3]
        typer.echo(f"{n:3d}. {r['study']}  score {r['score']:.3f}{where}  "
                   + ", ".join(f"{k} {v:.2f}" for k, v in top3))  # fmt: skip
    if not res["results"]:
        typer.echo("no results")


@app.command("serve")
def serve_cmd(
    library: Path = typer.Argument(..., help="Library folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (default: this machine only)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    max_upload_mb: int = typer.Option(512, "--max-upload-mb", help="Largest accepted upload."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
) -> None:
    """Serve the library's web page and JSON API (GET /api/search?q=TEXT&k=10)."""
    from ..serve import is_loopback, serve

    if not is_loopback(host):
        stderr(f"warning: binding {host}: the library (reports, scans) is reachable from other machines; it has no "
               "login. Put it behind an authenticating proxy.")  # fmt: skip
    typer.echo(f"serving {library} on http://{host}:{port}/ (Ctrl-C stops)")
    serve(library, host=host, port=port, device=device, max_upload_mb=max_upload_mb)
