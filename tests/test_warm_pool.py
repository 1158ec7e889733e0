"""WarmThreadPool: sequential work stays on one thread (asyncio's default pool wanders), concurrent
work spreads up to max_workers and then waits in order, errors and cancellation reach the caller."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor

import pytest

from geopera_kernel.server.warm_pool import WarmThreadPool


@pytest.fixture
def pool_of() -> Iterator[Callable[[int], WarmThreadPool]]:
    """WarmThreadPools of the given size, named warm_*, shut down after the test."""
    made: list[Executor] = []

    def make(workers: int) -> WarmThreadPool:
        pool = WarmThreadPool(workers, thread_name_prefix="warm")
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.shutdown(cancel_futures=True)


def _thread_name() -> str:
    return threading.current_thread().name


async def _sequential_threads(pool: object, calls: int) -> set[str]:
    loop = asyncio.get_running_loop()
    names = set()
    for _ in range(calls):
        names.add(await loop.run_in_executor(pool, _thread_name))  # type: ignore[arg-type]
    return names


def test_calls_awaited_one_after_another_run_on_one_thread(pool_of: Callable[[int], WarmThreadPool]) -> None:
    assert asyncio.run(_sequential_threads(pool_of(4), 200)) == {"warm_0"}


def _chain_from_done_callbacks(pool: object, calls: int) -> set[str]:
    """Each task submitted the moment the previous one's result is set (from its done
    callback, in the thread that ran it): as a caller awaiting the result may, before that
    thread has gone back to waiting for work."""
    names: list[str] = []
    done = threading.Event()

    def next_call(future: object | None) -> None:
        if future is not None:
            names.append(future.result())  # type: ignore[attr-defined]
        if len(names) == calls:
            done.set()
            return
        pool.submit(_thread_name).add_done_callback(next_call)  # type: ignore[attr-defined]

    next_call(None)
    assert done.wait(10)
    return set(names)


def test_a_task_submitted_as_the_last_result_is_set_finds_that_thread(
    pool_of: Callable[[int], WarmThreadPool],
) -> None:
    """A thread rejoins the idle stack before its task's result is set; the standard pool's
    thread is not idle yet at that moment, so each such task starts or wakes another thread."""
    assert _chain_from_done_callbacks(pool_of(4), 50) == {"warm_0"}
    with ThreadPoolExecutor(4, thread_name_prefix="std") as standard:
        assert len(_chain_from_done_callbacks(standard, 50)) > 1


def test_concurrent_tasks_use_up_to_max_workers_then_wait_in_order(
    pool_of: Callable[[int], WarmThreadPool],
) -> None:
    pool = pool_of(2)
    release = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    def task(index: int) -> tuple[int, str]:
        with lock:
            started.append(index)
        release.wait(10)
        return index, _thread_name()

    futures = [pool.submit(task, i) for i in range(5)]
    for _ in range(200):
        if len(started) == 2:
            break
        threading.Event().wait(0.01)
    assert sorted(started) == [0, 1]  # two threads busy, the other three waiting
    release.set()
    results = [f.result(10) for f in futures]
    assert [index for index, _ in results] == [0, 1, 2, 3, 4]
    assert {name for _, name in results} == {"warm_0", "warm_1"}
    assert started[2:] == [2, 3, 4]  # the waiting ones ran in the order they came


def test_errors_and_cancellation_reach_the_caller(pool_of: Callable[[int], WarmThreadPool]) -> None:
    pool = pool_of(1)

    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        pool.submit(fail).result(10)
    gate = threading.Event()
    blocker = pool.submit(gate.wait, 10)
    queued = pool.submit(_thread_name)
    assert queued.cancel()  # still waiting: cancelled, never run
    gate.set()
    assert blocker.result(10) is True
    assert pool.submit(_thread_name).result(10) == "warm_0"  # the thread lived on


def test_shutdown_stops_the_threads_and_refuses_new_work() -> None:
    pool = WarmThreadPool(3, thread_name_prefix="warm")
    futures = [pool.submit(_thread_name) for _ in range(3)]
    assert all(f.result(10).startswith("warm_") for f in futures)
    pool.shutdown(wait=True)
    assert not any(t.name.startswith("warm_") and t.is_alive() for t in threading.enumerate())
    with pytest.raises(RuntimeError):
        pool.submit(_thread_name)
