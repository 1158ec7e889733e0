"""Raster work on the request path (inspection, statistics, COG conversion) runs here: a
bounded thread pool, never the event loop and never an unbounded number of threads.

A call whose caller goes away (client cancel, deadline) stops waiting at once. Its work is
abandoned: queued work never starts, running work stops at its next ``check_cancelled``
(between statistics blocks, before a conversion), and what finishes anyway is handed to
``discard`` so nothing it produced stays behind.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from geopera_kernel.raster import RASTER_WORK_CANCELLED, RasterError

log = logging.getLogger(__name__)

T = TypeVar("T")
CheckCancelled = Callable[[], None]


def default_raster_workers() -> int:
    # Decoding and compressing are CPU-bound and GDAL releases the GIL: one thread per core,
    # at most 4 so a large host still leaves cores to analytics and the event loop.
    return max(1, min(4, os.cpu_count() or 1))


class RasterWorkPool:
    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_raster_workers()
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="raster")

    async def run(self, work: Callable[[CheckCancelled], T], *, discard: Callable[[T], None] | None = None) -> T:
        """``work(check_cancelled)`` on the pool. ``check_cancelled`` raises
        RasterError(RASTER_WORK_CANCELLED) once the caller has been cancelled; ``discard``
        receives the result of work that completed after that."""
        cancelled = threading.Event()

        def check_cancelled() -> None:
            if cancelled.is_set():
                raise RasterError(RASTER_WORK_CANCELLED, "the call was cancelled or its deadline passed")

        def guarded() -> T:
            check_cancelled()  # queued work whose caller already left never starts
            return work(check_cancelled)

        future = asyncio.get_running_loop().run_in_executor(self._pool, guarded)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled.set()
            future.add_done_callback(functools.partial(_discard_result, discard))
            raise


def _discard_result(discard: Callable[[T], None] | None, future: asyncio.Future[T]) -> None:
    # Retrieving the exception also keeps asyncio from logging it as never retrieved.
    if future.cancelled() or future.exception() is not None or discard is None:
        return
    try:
        discard(future.result())
    except Exception:  # a failed cleanup must not break the event loop's callback
        log.exception("discarding the result of cancelled raster work failed")
