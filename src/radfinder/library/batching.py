"""Coalescing of concurrent requests into one batched call (dynamic batching for the search server).

Fifty clients searching at once would otherwise queue fifty one-sentence passes of the text tower behind a lock;
one pass over fifty sentences costs a few of those. `Coalescer.submit` from any thread: the first caller that
finds no batch running becomes the leader and runs batches of whatever is pending (its own item included) until
nothing is left; the others wait for their result. No background thread, nothing to shut down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """`fn(items) -> results` (one result per item, same order) called on batches of at most `max_batch`."""

    def __init__(self, fn: Callable[[Sequence[T]], Sequence[R]], max_batch: int = 64):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._fn = fn
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[tuple[T, Future]] = []
        self._running = False
        self.batches = 0  # batches run so far (for tests and stats)

    def submit(self, item: T) -> R:
        future: Future = Future()
        with self._lock:
            self._pending.append((item, future))
            lead = not self._running
            self._running = True
        if lead:
            self._drain()
        return future.result()

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                if not batch:
                    self._running = False
                    return
            try:
                results = list(self._fn([item for item, _ in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"batched call returned {len(results)} results for {len(batch)} items")
            except BaseException as exc:  # every waiter gets the failure, the leader keeps draining
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    future.set_result(result)
            self.batches += 1
