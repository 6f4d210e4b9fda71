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


# Set by the root option `--debug` (or RADFINDER_DEBUG=1): `main` then lets an internal error's traceback through.
state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback when radfinder fails internally."),
) -> None:
    """3D CT vision-language models: read scans, mine reports, train, evaluate and run RadFinder."""
    state["debug"] = state["debug"] or debug
