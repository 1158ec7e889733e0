"""What the job service announces over NOTIFY, and what it makes of the
announcements: the payloads are written and read here only.

Notifications only say "something changed"; listeners then read the truth
from the tables. A watcher that is slow never holds anyone up: it is woken by
an `asyncio.Event`, not fed through a queue. After a reconnect every listener
is woken, since notifications sent meanwhile were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from geopera_kernel.server.domain.jobs.records import JobEvent, JobRecord
from geopera_kernel.server.store import Q
from geopera_kernel.server.store.listener import Listener

EVENTS_CHANNEL = "geopera_job_events"  # also named in jobs.sql (insert_events, report_progress)
DISPATCH_CHANNEL = "geopera_dispatch"
CANCEL_CHANNEL = "geopera_worker_cancel"
LOGS_CHANNEL = "geopera_job_logs"  # payload: the job id (see logs.py)


async def notify(conn: psycopg.AsyncConnection[Any], channel: str, payload: str) -> None:
    await conn.execute(Q.notify, {"channel": channel, "payload": payload})


def encode_cancel(worker_id: str, job_id: str) -> str:
    return f"{worker_id}:{job_id}"


def decode_cancel(payload: str) -> tuple[str, str]:
    """(worker id, job id) of a cancel announcement."""
    worker_id, job_id = payload.split(":", 1)
    return worker_id, job_id


@dataclass(frozen=True)
class EventNotice:
    """A job event as announced on EVENTS_CHANNEL (see insert_events): its
    head, and the snapshot when it fitted NOTIFY's payload limit."""

    job_id: str
    sequence: int
    event_type: str
    event_time: str
    terminal: bool
    worker_id: str
    snapshot: dict[str, Any] | None

    @classmethod
    def decode(cls, payload: str) -> EventNotice:
        note = json.loads(payload)
        return cls(note["j"], note["s"], note["e"], note["at"], note["t"], note["w"] or "", note.get("snap"))

    def event(self, input_params: dict[str, Any]) -> JobEvent | None:
        """The event, or None when the announcement left the snapshot out.
        Snapshots leave out input_params (they never change): the job's are given."""
        if self.snapshot is None:
            return None
        snapshot = {**self.snapshot, "input_params": input_params}
        return JobEvent(
            self.sequence, self.event_type, datetime.fromisoformat(self.event_time), JobRecord.from_json(snapshot)
        )


@dataclass
class JobWatch:
    """What a watcher of one job receives: announced events and a wake-up flag."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pending: list[EventNotice] = field(default_factory=list)
    # Set when the job got log records (or after a reconnect): read them.
    logs_pending: bool = True

    def take(self) -> list[EventNotice]:
        notes, self.pending = self.pending, []
        self.wake.clear()
        return notes


class Notifications:
    """The job announcements of every replica, fanned out in memory to this
    replica's watchers, dispatcher and worker sessions."""

    def __init__(self, url: str) -> None:
        self._listener = Listener(
            url, (EVENTS_CHANNEL, DISPATCH_CHANNEL, CANCEL_CHANNEL, LOGS_CHANNEL), self._deliver, self._wake_everyone
        )
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
        # Set when the server stops: long-lived streams end so that clients
        # resume (watchers) or reconnect (workers) elsewhere without waiting
        # out the shutdown grace period.
        self.closing = asyncio.Event()
        # Called on every job event (the webhook sender: the event may have enqueued messages).
        self.on_event: list[Callable[[], None]] = []

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

    def _deliver(self, channel: str, payload: str) -> None:
        if channel == EVENTS_CHANNEL:
            note = EventNotice.decode(payload)
            for wake in self.on_event:
                wake()
            for watch in self._job_watchers.get(note.job_id, ()):
                watch.pending.append(note)
                watch.wake.set()
            if note.terminal:
                if note.worker_id and self.on_job_end is not None:
                    self.on_job_end(note.worker_id)
                self.dispatch_wakeup.set()  # a worker slot is free
        elif channel == LOGS_CHANNEL:
            for watch in self._job_watchers.get(payload, ()):
                watch.logs_pending = True
                watch.wake.set()
        elif channel == DISPATCH_CHANNEL:
            self.maybe_queued = True
            self.dispatch_wakeup.set()
        elif channel == CANCEL_CHANNEL:
            worker_id, job_id = decode_cancel(payload)
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
                watch.logs_pending = True
                watch.wake.set()

    @contextlib.contextmanager
    def watch_job(self, job_id: str) -> Iterator[JobWatch]:
        with self.watch_jobs([job_id]) as watch:
            yield watch

    @contextlib.contextmanager
    def watch_jobs(self, job_ids: Iterable[str]) -> Iterator[JobWatch]:
        """One watch fed by the announcements of every job named (WatchJobs)."""
        watch = JobWatch()
        ids = list(dict.fromkeys(job_ids))
        for job_id in ids:
            self._job_watchers[job_id].append(watch)
        try:
            yield watch
        finally:
            for job_id in ids:
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
