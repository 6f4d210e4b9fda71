"""Command-line interface (typer). `radfinder.cli.main(argv)` runs it in-process."""

from .main import main

__all__ = ["main"]
