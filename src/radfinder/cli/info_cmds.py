"""`radfinder version`: what is installed, and where it would run."""

from __future__ import annotations

import typer

from .app import app
from .common import print_json


@app.command("version")
def version(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the radfinder, torch and device versions."""
    import torch

    from .. import __version__
    from ..device import resolve_device

    info = {"radfinder": __version__, "torch": torch.__version__, "device": str(resolve_device("auto"))}
    if json_out:
        print_json(info)
    else:
        for k, v in info.items():
            typer.echo(f"{k}: {v}")
