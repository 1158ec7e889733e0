"""One LISTEN connection per server process, fanned out in memory.

Notifications only say "something changed"; listeners then read the truth
from the tables. A watcher that is slow never holds anyone up: it is woken by
an `asyncio.Event`, not fed through a queue. After a reconnect every listener
is woken, since notifications sent meanwhile were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "geopera_job_events"  # also named in jobs.sql (insert_events)
DISPATCH_CHANNEL = "geopera_dispatch"
CANCEL_CHANNEL = "geopera_worker_cancel"


@dataclass
class JobWatch:
    """What a watcher of one job receives: announced events (parsed NOTIFY
    payloads, possibly with the job snapshot) and a wake-up flag."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pending: list[dict[str, Any]] = field(default_factory=list)

    def take(self) -> list[dict[str, Any]]:
        notes, self.pending = self.pending, []
        self.wake.clear()
        return notes


class Notifications:
    def __init__(self, url: str) -> None:
        self._url = url
        self._job_watchers: dict[str, list[JobWatch]] = defaultdict(list)
        self.dispatch_wakeup = asyncio.Event()
        # Whether jobs may be waiting in the queue: set by every `dispatch`
        # notification (a job queued or requeued) and on (re)connecting (some
        # may have been missed); the dispatcher clears it once its claims came
        # back short. A freed slot alone then wakes no claim: nothing waits.
        self.maybe_queued = True
        self._cancel_handlers: dict[str, Callable[[str], None]] = {}
        # Told the worker id whenever one of its jobs ends (the dispatcher).
        self.on_job_end: Callable[[str], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        # Set when the server stops: long-lived streams end so that clients
        # resume (watchers) or reconnect (workers) elsewhere without waiting
        # out the shutdown grace period.
        self.closing = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listener")
        await asyncio.wait_for(self._connected.wait(), timeout=30)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                    for channel in (EVENTS_CHANNEL, DISPATCH_CHANNEL, CANCEL_CHANNEL):
                        await conn.execute(f"LISTEN {channel}")
                    self._connected.set()
                    self._wake_everyone()
                    delay = 0.5
                    async for note in conn.notifies():
                        self._deliver(note.channel, note.payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notification listener lost its connection; reconnecting in %.1f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _deliver(self, channel: str, payload: str) -> None:
        if channel == EVENTS_CHANNEL:
            note = json.loads(payload)
            for watch in self._job_watchers.get(note["j"], ()):
                watch.pending.append(note)
                watch.wake.set()
            if note["t"]:
                if note["w"] and self.on_job_end is not None:
                    self.on_job_end(note["w"])
                self.dispatch_wakeup.set()  # a worker slot is free
        elif channel == DISPATCH_CHANNEL:
            self.maybe_queued = True
            self.dispatch_wakeup.set()
        elif channel == CANCEL_CHANNEL:
            worker_id, job_id = payload.split(":", 1)
            handler = self._cancel_handlers.get(worker_id)
            if handler is not None:
                handler(job_id)

    def close_streams(self) -> None:
        self.closing.set()
        self._wake_everyone()

    def _wake_everyone(self) -> None:
        self.maybe_queued = True
        self.dispatch_wakeup.set()
        for watches in self._job_watchers.values():
            for watch in watches:
                watch.wake.set()

    @contextlib.contextmanager
    def watch_job(self, job_id: str) -> Iterator[JobWatch]:
        watch = JobWatch()
        self._job_watchers[job_id].append(watch)
        try:
            yield watch
        finally:
            watchers = self._job_watchers.get(job_id)
            if watchers is not None:
                watchers.remove(watch)
                if not watchers:
                    del self._job_watchers[job_id]

    @contextlib.contextmanager
    def on_cancel(self, worker_id: str, handler: Callable[[str], None]) -> Iterator[None]:
        self._cancel_handlers[worker_id] = handler
        try:
            yield
        finally:
            if self._cancel_handlers.get(worker_id) is handler:  # not a reconnect's newer handler
                del self._cancel_handlers[worker_id]
