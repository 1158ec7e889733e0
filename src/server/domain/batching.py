"""Coalescing concurrent lookups by key into one batched call (the dataloader
pattern): the lookups that arrive while the event loop runs a turn go out
together as one query, and a key asked twice meanwhile is fetched once.

A batch is dispatched on the loop turn after its first key was asked, so a
lone lookup waits for nothing; under load, keys queue while up to
`max_in_flight` batches are out, and the next batch takes them all (up to
`max_batch`): the busier the server, the fewer round trips per lookup."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Loaded(Generic[V]):
    """One key's answer: its value (None when the fetch returned none for it),
    the wall time the batch held its resource, and how many keys it carried."""

    value: V | None
    seconds: float
    batch_size: int


# fetch(keys) -> ({key: value} for the keys that have one, seconds it held its resource)
Fetch = Callable[[list[str]], Awaitable[tuple[dict[str, V], float]]]


def _consume(future: asyncio.Future[Any]) -> None:
    # Every waiter may have been cancelled: the failure is still seen (by the
    # waiters that remain), so asyncio need not report it as never retrieved.
    if not future.cancelled():
        future.exception()


class BatchLoader(Generic[V]):
    def __init__(self, fetch: Fetch[V], *, max_batch: int = 128, max_in_flight: int = 2) -> None:
        self._fetch = fetch
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queued: dict[str, asyncio.Future[Loaded[V]]] = {}
        self._in_flight: dict[str, asyncio.Future[Loaded[V]]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def load(self, key: str) -> Loaded[V]:
        future = self._queued.get(key) or self._in_flight.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_consume)
            self._queued[key] = future
            self._schedule()
        # Shielded: a caller that gives up must not cancel the others' answer.
        return await asyncio.shield(future)

    def _schedule(self) -> None:
        if self._scheduled or not self._queued or len(self._running) >= self._max_in_flight:
            return
        self._scheduled = True
        # An empty context: the batch belongs to no one call (its cost is
        # reported to each waiter through `Loaded`).
        asyncio.get_running_loop().call_soon(self._dispatch, context=contextvars.Context())

    def _dispatch(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._queued and len(self._running) < self._max_in_flight:
            keys = list(self._queued)[: self._max_batch]
            batch = {key: self._queued.pop(key) for key in keys}
            self._in_flight.update(batch)
            task = loop.create_task(self._run(batch), context=contextvars.Context())
            self._running.add(task)

    async def _run(self, batch: dict[str, asyncio.Future[Loaded[V]]]) -> None:
        try:
            try:
                values, seconds = await self._fetch(list(batch))
            except asyncio.CancelledError:
                for future in batch.values():
                    future.cancel()
                raise
            except Exception as error:
                for future in batch.values():
                    if not future.done():
                        future.set_exception(error)
                return
            size = len(batch)
            for key, future in batch.items():
                if not future.done():
                    future.set_result(Loaded(values.get(key), seconds, size))
        finally:
            for key in batch:
                self._in_flight.pop(key, None)
            task = asyncio.current_task()
            if task is not None:
                self._running.discard(task)
            self._schedule()
