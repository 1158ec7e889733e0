"""ChunkRunner: results in task order, with a bounded number of chunks in flight."""

from __future__ import annotations

import itertools
import threading

import pytest

from geopera_kernel.analytics.reader import ChunkRunner


@pytest.mark.parametrize("ahead", [2, 16])
def test_chunks_in_flight_are_bounded_by_ahead(ahead: int) -> None:
    """While the first chunk runs, the others in flight (``ahead`` per thread) run and finish;
    no chunk after them starts before the first one's result is taken."""
    workers = 2
    bound = ahead * workers
    sequence = itertools.count()
    lock = threading.Lock()
    started: dict[int, int] = {}
    release = threading.Event()
    first_end: list[int] = []

    def fn(datasets: list[object], task: int) -> int:
        with lock:
            started[task] = next(sequence)
        if task == 0:
            assert release.wait(30), "the chunks in flight never reached the bound"
            with lock:
                first_end.append(next(sequence))
        elif task == bound - 1:
            release.set()  # the last chunk allowed in flight while the first one runs
        return task * task

    tasks = list(range(bound + 10))
    results = list(ChunkRunner((), workers, lambda: None, ahead).map(fn, tasks))
    assert results == [task * task for task in tasks]
    assert all(started[task] < first_end[0] for task in range(bound))
    assert all(started[task] > first_end[0] for task in range(bound, len(tasks)))
