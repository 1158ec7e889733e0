"""A job's event stream (Kernel WatchJob, REST and MCP watch): the snapshot
unless resuming, then every change in order, ending after the terminal one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.jobs.logs import JobLogEntry, check_level
from geopera_kernel.server.domain.jobs.notices import JobWatch, Notifications
from geopera_kernel.server.domain.jobs.records import JobEvent
from geopera_kernel.server.domain.jobs.service import JobService
from geopera_kernel.server.errors import Code, DomainError, invalid_argument

WATCH_POLL_SECONDS = 5.0
LOG_BATCH = 500


@dataclass(frozen=True)
class JobLogEvent:
    """A log record on a watch with `include_logs`: not a job event, so it repeats
    the sequence of the latest job event sent (resuming by sequence stays exact)."""

    sequence: int
    entry: JobLogEntry
    event_type: str = "log"


@dataclass(frozen=True)
class LogFollow:
    """What a watch with `include_logs` asks for."""

    after_sequence: int = 0
    min_level: int = 0


async def job_events(
    jobs: JobService,
    notifications: Notifications,
    principal: Principal,
    job_id: str,
    after_sequence: int,
    *,
    idle_limit: float,
    logs: LogFollow | None = None,
) -> AsyncIterator[JobEvent | JobLogEvent]:
    """Ends with UNAVAILABLE (`SERVER_SHUTTING_DOWN`, `WATCH_IDLE`) naming the
    sequence to resume after when the server stops or the job has no news for
    `idle_limit` seconds."""
    principal.require_scope("processing:read")
    if after_sequence < 0:
        raise invalid_argument("INVALID_SEQUENCE", "after_sequence must be >= 0", field="after_sequence")
    if logs is not None:
        if logs.after_sequence < 0:
            raise invalid_argument("INVALID_SEQUENCE", "after_log_sequence must be >= 0", field="after_log_sequence")
        check_level(logs.min_level, "min_log_level")
    last_log = logs.after_sequence if logs is not None else 0

    async def new_logs(watch: JobWatch, sequence: int) -> AsyncIterator[JobLogEvent]:
        """The records not sent yet, when the watch follows logs."""
        nonlocal last_log
        if logs is None or not watch.logs_pending:
            return
        watch.logs_pending = False
        while True:
            entries = await jobs.logs_after(job_id, last_log, logs.min_level, LOG_BATCH)
            for entry in entries:
                yield JobLogEvent(sequence, entry)
                last_log = entry.sequence
            if len(entries) < LOG_BATCH:
                return

    with notifications.watch_job(job_id) as watch:
        # Subscribed before reading, so no change can slip between the two.
        job = await jobs.get(principal, job_id)
        if after_sequence == 0:
            if job.terminal:  # the stream still ends with the terminal status
                async for record in new_logs(watch, 0):
                    yield record
            yield JobEvent(job.sequence, "snapshot", job.update_time, job)
            if job.terminal:
                return
            last = job.sequence
        elif after_sequence >= job.sequence and job.terminal:
            async for record in new_logs(watch, after_sequence):
                yield record
            return  # the client has every event already: nothing newer will come
        else:
            last = after_sequence  # never send an event the client has (or said it has)
        # Events come from the announcements themselves; the table is read
        # only to catch up: after a resume, on a gap, or when an
        # announcement was too large to carry its snapshot.
        catch_up = last < job.sequence
        last_news = time.monotonic()
        while True:
            # Records come before the events announced with them, and before the end.
            async for record in new_logs(watch, last):
                yield record
            if catch_up:
                events, catch_up = await jobs.events_after(job_id, last), False
            else:
                events, catch_up = _announced(watch, last, job.input_params)
            for event in events:
                if event.job.terminal:
                    watch.logs_pending = True
                    async for record in new_logs(watch, last):
                        yield record
                yield event
                last = event.sequence
                last_news = time.monotonic()
                if event.job.terminal:
                    return
            if catch_up or watch.pending or (logs is not None and watch.logs_pending):
                continue
            if notifications.closing.is_set():
                raise DomainError(
                    Code.UNAVAILABLE,
                    "SERVER_SHUTTING_DOWN",
                    f"the server is stopping; resume the watch with after_sequence={last}",
                    metadata={"after_sequence": str(last)},
                )
            idle = time.monotonic() - last_news
            if idle >= idle_limit:
                raise DomainError(
                    Code.UNAVAILABLE,
                    "WATCH_IDLE",
                    f"job {job_id} had no event for {idle_limit:g} s; resume the watch with after_sequence={last}",
                    metadata={"after_sequence": str(last)},
                )
            try:
                await asyncio.wait_for(watch.wake.wait(), timeout=min(WATCH_POLL_SECONDS, idle_limit - idle))
            except TimeoutError:
                catch_up = True  # a safety net for a lost announcement
            if not watch.pending and not (logs is not None and watch.logs_pending):
                catch_up = True  # woken without news: the listener reconnected


def _announced(watch: JobWatch, last: int, input_params: dict[str, Any]) -> tuple[list[JobEvent], bool]:
    """The announced events that follow `last` without a gap, and whether the
    table must be read (an announcement is missing or carries no snapshot)."""
    events: list[JobEvent] = []
    for note in sorted(watch.take(), key=lambda n: n.sequence):
        if note.sequence <= last:
            continue
        event = note.event(input_params) if note.sequence == last + 1 else None
        if event is None:
            return events, True
        events.append(event)
        last = event.sequence
    return events, False
