"""A thread pool that keeps work on its warmest thread.

`concurrent.futures.ThreadPoolExecutor` wakes whichever idle thread waited longest, and
starts a new thread when a task arrives in the instant between one task's result and its
thread going idle again, which an event loop awaiting that result hits often. Sequential
analytics calls then wander over every thread of the pool, and each thread builds its own
per-thread caches on its first call: a PROJ transformer (pyproj objects are per thread) cost
about 2 ms of a 1 km² call that otherwise takes 3-4 ms.

Here an idle thread goes on a stack and the most recent one takes the next task; a thread
rejoins the stack *before* its task's result is set, so the next task of the same caller finds
it there. Threads are started only when every thread is busy, up to `max_workers`; beyond that
tasks wait in order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")

_Task = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class WarmThreadPool(Executor):
    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # a stack: the last to finish is the first to go again
        self._waiting: deque[_Task] = deque()
        self._workers: list[_Worker] = []
        self._shutdown = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        task: _Task = (future, fn, args, kwargs)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._idle:
                self._idle.pop().hand(task)
            elif len(self._workers) < self._max_workers:
                worker = _Worker(self, f"{self._prefix}_{len(self._workers)}")
                self._workers.append(worker)
                worker.hand(task)
                worker.start()
            else:
                self._waiting.append(task)
        return future

    def _finished(self, worker: _Worker) -> None:
        """`worker` is done with its task (its result not yet set): the next task waiting, or
        the top of the idle stack."""
        with self._lock:
            if self._waiting:
                worker.hand(self._waiting.popleft())
            elif self._shutdown:
                worker.hand(None)
            else:
                self._idle.append(worker)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._waiting:
                    self._waiting.popleft()[0].cancel()
            for worker in self._idle:
                worker.hand(None)
            self._idle.clear()
            workers = list(self._workers)
        if wait:
            for worker in workers:
                if worker is not threading.current_thread():
                    worker.join()


class _Worker(threading.Thread):
    def __init__(self, pool: WarmThreadPool, name: str) -> None:
        # A daemon, as asyncio's default executor's threads are not: a call still running at
        # exit (the server drains its calls before stopping) does not hold the process up.
        super().__init__(name=name, daemon=True)
        self._pool = pool
        self._ready = threading.Event()
        self._task: _Task | None = None

    def hand(self, task: _Task | None) -> None:
        """The next task (None: stop). Called with the pool's lock held, once per idle spell."""
        self._task = task
        self._ready.set()

    def run(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            task, self._task = self._task, None
            if task is None:
                return
            future, fn, args, kwargs = task
            del task
            if not future.set_running_or_notify_cancel():
                self._pool._finished(self)
                continue
            result = None
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:  # handed to the caller through its future
                self._pool._finished(self)
                future.set_exception(error)
            else:
                self._pool._finished(self)
                future.set_result(result)
            # Not kept alive while this thread waits for its next task.
            del future, fn, args, kwargs
            result = None
