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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from geopera_kernel.analytics.quantiles import StoredPart, ValueStore, in_intervals, part_histogram
from geopera_kernel.analytics.reader import ChunkRunner, bounded_gdal_cache
from geopera_kernel.raster.domain_errors import Code, DomainError
from geopera_kernel.raster.s3_endpoint import use_endpoint_from_environment
from geopera_kernel.raster.tracing import carry_trace

T = TypeVar("T")
W = TypeVar("W")

# Batches per worker thread: enough that a slow batch does not leave the others idle at the end.
_BATCHES_PER_THREAD = 4

_CLIENTS_LOCK = threading.Lock()
_clients: dict[str, Any] = {}


@dataclass(frozen=True)
class ChunkJob(Generic[W, T]):
    """``fn(datasets, task)`` over ``tasks``, ``datasets`` being open handles of ``paths``.

    ``lighten`` (on a cluster only): the caller receives ``lighten(results)`` of each batch,
    while the whole results stay on the worker that computed them, reachable through the
    ``BatchRef`` yielded beside each result (``RemoteValueStore`` selects kept values there).
    ``ahead`` (in-process only): tasks in flight per thread (``ChunkRunner``), more for small results.
    """

    paths: tuple[str, ...]
    fn: Callable[[list[Any], W], T]
    tasks: Sequence[W]
    lighten: Callable[[list[T]], list[T]] | None = None
    ahead: int = 2


@dataclass(frozen=True)
class BatchRef:
    """A batch's whole results, left on the worker, and one task's position in the batch."""

    future: Any  # distributed.Future of the batch's list of results
    index: int


def _unavailable(address: str, error: BaseException) -> DomainError:
    return DomainError(
        Code.UNAVAILABLE,
        "ANALYTICS_CLUSTER_UNAVAILABLE",
        f"the analytics cluster at {address} failed the call ({type(error).__name__}); retry later",
    )


def _cluster_result(future: Any) -> Any:
    """A future's result; a cluster that lost the work (a worker killed, the scheduler's
    connection closed, the task cancelled by the cluster) is UNAVAILABLE, not an internal
    error: the same call may succeed once the cluster is whole again."""
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    try:
        return future.result()
    # Not every OSError: one a method raised on a worker is its own failure, not the cluster's.
    except (KilledWorker, FutureCancelledError, CommClosedError, TimeoutError) as error:
        raise _unavailable(str(getattr(getattr(future.client, "scheduler", None), "address", "?")), error) from error


def client_for(address: str) -> Any:
    """The process's ``distributed.Client`` for ``address`` (connected on first use)."""
    with _CLIENTS_LOCK:
        client = _clients.get(address)
        if client is None or client.status in ("closed", "closing"):
            from distributed import Client  # only when a cluster is configured

            try:
                client = _clients[address] = Client(address, set_as_default=False, timeout="10s")
            except (OSError, TimeoutError) as error:
                raise _unavailable(address, error) from error
        return client


@dataclass(frozen=True)
class _Failed:
    error: DomainError


def _run_batch(paths: tuple[str, ...], fn: Callable[[list[Any], W], T], tasks: Sequence[W]) -> list[T] | _Failed:
    """On a Dask worker: one batch of chunks, with that worker thread's open handles. A
    method's error comes back as a value: Dask's own exception transport hands the caller a
    bare ``Exception`` carrying only the text, and the caller needs the reason and code."""
    use_endpoint_from_environment()  # `/vsis3/` paths: this worker's own AWS_ENDPOINT_URL, as GDAL names it
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
) -> Iterator[tuple[int, T, BatchRef | None]]:
    """(job position, result, where the whole result stays or None) for every task of every
    job, jobs in order, tasks in order."""
    if not scheduler:
        for position, job in enumerate(jobs):
            check_cancelled()
            for result in ChunkRunner(job.paths, workers, check_cancelled, job.ahead).map(job.fn, job.tasks):
                yield position, result, None
        return
    client = client_for(scheduler)
    threads = max(1, sum(client.nthreads().values()))
    total = sum(len(job.tasks) for job in jobs)
    size = max(1, math.ceil(total / (threads * _BATCHES_PER_THREAD)))
    check_cancelled()
    # Every batch submitted now (pure=False: a batch is never deduplicated with another call's).
    futures = []
    for position, job in enumerate(jobs):
        for batch in _batches(job.tasks, size):
            # In the trace of the call (when tracing): the batch's span joins it on the worker.
            whole = client.submit(carry_trace(_run_batch, "analytics chunks"), job.paths, job.fn, batch, pure=False)
            light = None if job.lighten is None else client.submit(_lightened, whole, job.lighten, pure=False)
            futures.append((position, whole, light))
    finished = False
    try:
        for position, whole, light in futures:
            results = _cluster_result(whole if light is None else light)
            if isinstance(results, _Failed):
                raise results.error
            if light is None:
                whole.release()  # the worker may drop it now
            check_cancelled()
            for index, result in enumerate(results):
                yield position, result, None if light is None else BatchRef(whole, index)
        finished = True
    finally:
        client.cancel([light or whole for _, whole, light in futures], force=True)
        if not finished:
            client.cancel([whole for _, whole, _ in futures], force=True)


def _lightened(results: list[T] | _Failed, lighten: Callable[[list[T]], list[T]]) -> list[T] | _Failed:
    return results if isinstance(results, _Failed) else lighten(results)


Locate = Callable[[list[Any], tuple[int, ...]], StoredPart]


def _select_remote(
    results: list[Any], locate: Locate, locators: list[tuple[int, ...]], intervals: list[tuple[int, int]] | None
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """On the worker holding a batch: the kept values of the given parts, only those in the
    bucket intervals (all when None)."""
    out = []
    for locator in locators:
        part = locate(results, locator)
        if intervals is None:
            out.append((part.values, part.weights))
            continue
        chosen = in_intervals(part.values, intervals)
        out.append((part.values[chosen], None if part.weights is None else part.weights[chosen]))
    return out


def _histograms_remote(
    results: list[Any], locate: Locate, locators: list[tuple[int, ...]], edges: np.ndarray, weighted: bool
) -> list[np.ndarray]:
    parts = [locate(results, locator) for locator in locators]
    return [part_histogram(part.values, part.weights, edges, weighted) for part in parts]


@dataclass
class RemoteValueStore(ValueStore):
    """A ``ValueStore`` whose values stay on the Dask workers that computed them: the caller
    holds only each part's size and bucket histogram. The exact selection runs where the
    values are: the merged histogram finds the buckets holding the wanted ranks, and each
    batch sends back only its values in those buckets (``selected``); explicit histograms are
    counted there too. Small stores (``DIRECT_*`` limits) fetch their values whole. Parts
    keep insertion order, so answers equal the in-process store's."""

    locate: Locate | None = None
    _remote: list[tuple[BatchRef, tuple[int, ...]]] = field(default_factory=list)

    def add_remote(self, ref: BatchRef, locator: tuple[int, ...], size: int, histogram: np.ndarray) -> None:
        if size == 0:
            return
        self.count += size
        self.histogram += histogram
        self._remote.append((ref, locator))

    def _by_batch(self) -> list[tuple[Any, list[tuple[int, ...]]]]:
        """Runs of consecutive parts held by one batch, in insertion order."""
        runs: list[tuple[Any, list[tuple[int, ...]]]] = []
        for ref, locator in self._remote:
            if runs and runs[-1][0] is ref.future:
                runs[-1][1].append(locator)
            else:
                runs.append((ref.future, [locator]))
        return runs

    def _fetch(self, fn: Callable[..., list[T]], *args: Any) -> Iterator[T]:
        runs = self._by_batch()
        if not runs:
            return
        client = runs[0][0].client
        futures = [client.submit(fn, future, self.locate, locators, *args, pure=False) for future, locators in runs]
        try:
            for future in futures:
                yield from _cluster_result(future)
        finally:
            client.cancel(futures, force=True)

    def parts(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        yield from super().parts()  # none: every part is remote
        yield from self._fetch(_select_remote, None)

    def selected(self, intervals: list[tuple[int, int]]) -> Iterable[tuple[np.ndarray, np.ndarray | None]]:
        return self._fetch(_select_remote, intervals)

    def part_histograms(self, edges: np.ndarray, weighted: bool) -> Iterable[np.ndarray]:
        return self._fetch(_histograms_remote, edges, weighted)

    def close(self) -> None:
        super().close()
        self._remote.clear()  # the batches' futures go with their last reference
