"""Progress bars for long work: tqdm on a terminal, quiet under `--json` or when disabled."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "", enabled: bool = True) -> Iterator[T]:
    """Wrap an iterable in a progress bar with ETA (written to stderr so stdout stays clean for JSON)."""
    if not enabled:
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
