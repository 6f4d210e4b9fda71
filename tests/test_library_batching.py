"""The server's query coalescing: every caller gets its own result, concurrent calls share batches, failures reach
every waiter of the failed batch and nobody else."""

from __future__ import annotations

import threading
import time

import pytest

from radfinder.library.batching import Coalescer


def _slow_square(calls: list[list[int]], queued=lambda: True):
    def fn(items):
        calls.append(list(items))
        # the first batch waits until the other callers have queued behind it (polled, with a deadline), so that
        # batching is certain however the threads are scheduled
        deadline = time.monotonic() + 60
        while len(calls) == 1 and not queued() and time.monotonic() < deadline:
            time.sleep(0.005)
        return [i * i for i in items]

    return fn


def _run_threads(n: int, target) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()


def test_concurrent_calls_get_their_own_results_in_shared_batches():
    calls: list[list[int]] = []
    co: Coalescer = Coalescer(_slow_square(calls, queued=lambda: len(co._pending) >= 39), max_batch=8)
    got: dict[int, int] = {}
    _run_threads(40, lambda i: got.__setitem__(i, co.submit(i)))
    assert got == {i: i * i for i in range(40)}
    assert sorted(x for c in calls for x in c) == list(range(40))  # each item computed exactly once
    assert max(len(c) for c in calls) <= 8
    assert len(calls) < 40  # batching happened
    assert co.batches == len(calls)


def test_a_failed_batch_fails_its_callers_only():
    def fn(items):
        time.sleep(0.02)
        if 13 in items:
            raise ValueError("bad item 13")
        return [str(i) for i in items]

    co = Coalescer(fn, max_batch=1)
    errors, ok = {}, {}

    def call(i):
        try:
            ok[i] = co.submit(i)
        except ValueError as exc:
            errors[i] = str(exc)

    _run_threads(20, call)
    assert errors == {13: "bad item 13"}
    assert ok == {i: str(i) for i in range(20) if i != 13}
    assert co.submit(5) == "5"  # still usable afterwards


def test_wrong_number_of_results_is_an_error():
    co = Coalescer(lambda items: [], max_batch=4)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        co.submit("x")
    with pytest.raises(ValueError):
        Coalescer(lambda items: items, max_batch=0)
