"""Keeping the accelerator busy during feature extraction.

Two overlaps:
* `prefetch`: scans are read and preprocessed in background threads, `depth` scans ahead of the one being
  encoded (gzip decoding, resampling and numpy work release the GIL), results in input order.
* `encode_windows_overlapped`: on CUDA, the windows of batch i + 1 are copied from pinned host memory on a
  separate stream while batch i is being encoded, and outputs stay on the device until the scan is done (one
  device-to-host copy per scan instead of one per batch). On CPU it is the plain batch loop.
Both give exactly the arrays of the sequential path; only the timing changes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch

from ..models.accel import autocast

T = TypeVar("T")
R = TypeVar("R")


class Pending:
    """The outcome of `fn(item)` computed in the background: `get()` returns it or re-raises its exception."""

    __slots__ = ("_future", "_value")

    def __init__(self, future: Future | None = None, value: Any = None):
        self._future, self._value = future, value

    def get(self) -> Any:
        return self._future.result() if self._future is not None else self._value


def prefetch(
    items: Iterable[T], fn: Callable[[T], R], *, depth: int = 1, workers: int = 1
) -> Iterator[tuple[T, Pending]]:
    """Yield (item, Pending(fn(item))) in order while up to `depth` later items are computed in `workers` threads.

    `depth=0` computes each item on demand in the caller's thread (no threads at all). Exceptions of `fn` are
    raised by `Pending.get()` in the caller, so a failing item does not stop the others.
    """
    if depth <= 0:
        for item in items:
            try:
                yield item, Pending(value=fn(item))
            except Exception as exc:  # same contract as the threaded path: raised on get()
                fut: Future = Future()
                fut.set_exception(exc)
                yield item, Pending(fut)
        return
    it = iter(items)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="rf-prefetch") as pool:
        queue: deque[tuple[T, Future]] = deque()
        for item in it:
            queue.append((item, pool.submit(fn, item)))
            if len(queue) > depth:
                head, fut = queue.popleft()
                yield head, Pending(fut)
        while queue:
            head, fut = queue.popleft()
            yield head, Pending(fut)


def _outputs(out: Any, spatial: bool = False) -> tuple[torch.Tensor, ...]:
    parts = [out.cls, out.patch_average, out.axis2] + ([out.spatial] if spatial else [])
    return tuple(t.detach().float() for t in parts)


@torch.no_grad()
def encode_windows_overlapped(
    encoder: Callable[..., Any], windows: np.ndarray, *, batch_size: int, device: torch.device | str,
    spatial: bool = False,
) -> tuple[np.ndarray, ...]:
    """Encode (N, 1, wh, ww, wd) windows in batches -> float32 cls, patch_average, axis2 (and with `spatial` the
    spatial token grid) as numpy, as `extract.encode_windows` does, with the host-to-device copies overlapping the
    compute on CUDA."""
    kw = {"spatial": True} if spatial else {}
    n_out = 4 if spatial else 3
    device = torch.device(device)
    n = len(windows)
    if n == 0:
        raise ValueError("no windows to encode")
    starts = list(range(0, n, batch_size))
    parts: list[tuple[torch.Tensor, ...]] = []
    if device.type != "cuda":
        for s in starts:
            batch = torch.from_numpy(np.ascontiguousarray(windows[s : s + batch_size])).to(device)
            parts.append(tuple(t.cpu() for t in _outputs(encoder(batch.float(), **kw), spatial)))
        return tuple(torch.cat([p[i] for p in parts]).numpy() for i in range(n_out))

    copy_stream = torch.cuda.Stream(device)
    compute = torch.cuda.current_stream(device)

    def stage(s: int):
        host = torch.from_numpy(np.ascontiguousarray(windows[s : s + batch_size])).pin_memory()
        with torch.cuda.stream(copy_stream):
            dev = host.to(device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(copy_stream)
        return host, dev, ready

    nxt = stage(starts[0]) if starts else None
    for k in range(len(starts)):
        host, dev, ready = nxt
        if k + 1 < len(starts):
            nxt = stage(starts[k + 1])  # the copy of the next batch runs while this one is encoded
        compute.wait_event(ready)
        dev.record_stream(compute)  # the copy stream's allocation is in use on the compute stream
        with autocast(device):
            parts.append(_outputs(encoder(dev.float(), **kw), spatial))
        del host
    return tuple(torch.cat([p[i] for p in parts]).cpu().numpy() for i in range(n_out))
