"""Chunk work on a Dask cluster (``GEOPERA_DASK_SCHEDULER=tcp://host:port``), or in-process.

``run_ordered`` is the one place the engine's chunk functions run: a list of jobs (raster paths,
a chunk function, its tasks) whose results come back job by job in task order. In-process it is
``ChunkRunner`` (threads of this process). With a scheduler address the tasks go to the
cluster's workers in batches of a few chunks (a Dask task costs about a millisecond of
scheduling, a chunk a few), every job's batches submitted at once so the cluster never idles
between items, and the results are still handed back in the same order. The caller merges
them exactly as the in-process path does, so answers are equal to the last digit: the same
functions, the same tasks, the same merge order; only the process computing a chunk differs.

Workers open the rasters themselves: paths must be readable there (a shared file system, or
``/vsis3/`` with the worker's own S3 settings). ``distributed`` is imported only when a
scheduler is configured; one client per address is kept for the process's lifetime.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from geopera_kernel.analytics.reader import ChunkRunner, bounded_gdal_cache
from geopera_kernel.raster.domain_errors import Code, DomainError

T = TypeVar("T")
W = TypeVar("W")

# Batches per worker thread: enough that a slow batch does not leave the others idle at the end.
_BATCHES_PER_THREAD = 4

_CLIENTS_LOCK = threading.Lock()
_clients: dict[str, Any] = {}


@dataclass(frozen=True)
class ChunkJob(Generic[W, T]):
    """``fn(datasets, task)`` over ``tasks``, ``datasets`` being open handles of ``paths``."""

    paths: tuple[str, ...]
    fn: Callable[[list[Any], W], T]
    tasks: Sequence[W]


def client_for(address: str) -> Any:
    """The process's ``distributed.Client`` for ``address`` (connected on first use)."""
    with _CLIENTS_LOCK:
        client = _clients.get(address)
        if client is None or client.status in ("closed", "closing"):
            from distributed import Client  # only when a cluster is configured

            try:
                client = _clients[address] = Client(address, set_as_default=False, timeout="10s")
            except (OSError, TimeoutError) as error:
                raise DomainError(
                    Code.UNAVAILABLE,
                    "ANALYTICS_CLUSTER_UNAVAILABLE",
                    f"the analytics cluster at {address} cannot be reached ({type(error).__name__}); retry later",
                ) from error
        return client


@dataclass(frozen=True)
class _Failed:
    error: DomainError


def _run_batch(paths: tuple[str, ...], fn: Callable[[list[Any], W], T], tasks: Sequence[W]) -> list[T] | _Failed:
    """On a Dask worker: one batch of chunks, with that worker thread's open handles. A
    method's error comes back as a value: Dask's own exception transport hands the caller a
    bare ``Exception`` carrying only the text, and the caller needs the reason and code."""
    runner = ChunkRunner(paths, 1, lambda: None)
    try:
        with bounded_gdal_cache():
            return [runner._task(fn, task) for task in tasks]
    except DomainError as error:
        return _Failed(error)


def _batches(tasks: Sequence[W], size: int) -> list[Sequence[W]]:
    return [tasks[start : start + size] for start in range(0, len(tasks), size)]


def run_ordered(
    jobs: Sequence[ChunkJob[Any, T]],
    *,
    workers: int,
    check_cancelled: Callable[[], None],
    scheduler: str | None = None,
) -> Iterator[tuple[int, T]]:
    """(job position, result) for every task of every job, jobs in order, tasks in order."""
    if not scheduler:
        for position, job in enumerate(jobs):
            check_cancelled()
            for result in ChunkRunner(job.paths, workers, check_cancelled).map(job.fn, job.tasks):
                yield position, result
        return
    client = client_for(scheduler)
    threads = max(1, sum(client.nthreads().values()))
    total = sum(len(job.tasks) for job in jobs)
    size = max(1, math.ceil(total / (threads * _BATCHES_PER_THREAD)))
    check_cancelled()
    # Every batch submitted now (pure=False: a batch is never deduplicated with another call's).
    futures = [
        (position, client.submit(_run_batch, job.paths, job.fn, batch, pure=False))
        for position, job in enumerate(jobs)
        for batch in _batches(job.tasks, size)
    ]
    try:
        for position, future in futures:
            results = future.result()
            future.release()  # the worker may drop it now
            if isinstance(results, _Failed):
                raise results.error
            check_cancelled()
            for result in results:
                yield position, result
    finally:
        client.cancel([future for _, future in futures], force=True)
