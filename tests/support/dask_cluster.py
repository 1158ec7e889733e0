"""A real Dask cluster for tests: a ``LocalCluster`` of two worker processes (one thread each)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def local_cluster(workers: int = 2) -> Iterator[str]:
    """The scheduler address of a fresh cluster of ``workers`` processes, closed on exit."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
