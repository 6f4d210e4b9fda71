"""The typer application object; command modules register on it (one module per area)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="radfinder",
    help="3D CT vision-language models: read scans, mine reports, train, evaluate and run RadFinder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """3D CT vision-language models: read scans, mine reports, train, evaluate and run RadFinder."""
