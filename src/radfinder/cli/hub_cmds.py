"""`radfinder download`: fetch released weights by Hugging Face id once (e.g. on a login node with network), for
machines that have none (`radfinder.models.hub`)."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app
from .common import print_json


@app.command("download")
def download_cmd(
    repo: str = typer.Argument(..., help="Hugging Face id ORG/NAME or ORG/NAME@REVISION (branch, tag or commit), "
                               "e.g. lmb-freiburg/radfinder."),
    to: Path | None = typer.Option(None, "--to", "--out", "-o", help="Also copy the files into this folder (real "
                                   "files plus radfinder-hub.json with repo id, commit and sha256 of each file): "
                                   "copy it to an offline machine and pass the folder where a checkpoint is asked."),
    kind: str = typer.Option("checkpoint", "--kind", help="Which loader's files to fetch: checkpoint (a RadFinder "
                             "checkpoint or official export), text (a transformers text encoder such as "
                             "Qwen/Qwen3-Embedding-0.6B), tokenizer, or spectre (the SPECTRE component files of "
                             "cclaess/SPECTRE)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Download (or, with HF_HUB_OFFLINE=1, find in the hub cache) only the files radfinder reads, check them, and
    print the snapshot folder and its commit. An official export that names its tokenizer repo
    (Qwen/Qwen3-Embedding-0.6B) gets that tokenizer too."""
    from ..models.hub import cache_dir, download

    resolved, files, companions = download(repo, to, kind)
    info = {"repo_id": resolved.source.repo_id, "revision": resolved.source.revision,
            "commit": resolved.source.commit, "folder": str(resolved.path), "hub_cache": str(cache_dir()),
            "kind": kind, "files": files, "companions": {k: v.as_dict() for k, v in companions.items()}}  # fmt: skip
    if json_out:
        print_json(info)
        return
    typer.echo(f"{info['repo_id']} revision {info['revision']}: commit {info['commit']}")
    typer.echo(f"folder: {info['folder']} ({len(files)} files)")
    for role, src in companions.items():
        typer.echo(f"{role}: {src.repo_id} revision {src.revision}: commit {src.commit}")
    pinned = f"{info['repo_id']}@{info['commit']}"
    typer.echo(f"use: radfinder classify {pinned} SCAN   (or the folder; offline: HF_HUB_OFFLINE=1)")
