"""The events of a set of jobs in one stream (Kernel WatchJobs, the HTTP
project event stream): a batch's jobs, or a project's, each delivered as its
own WatchJob would deliver it, resumable per job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.jobs.notices import Notifications
from geopera_kernel.server.domain.jobs.records import STATUSES, JobEvent
from geopera_kernel.server.domain.jobs.service import JobService
from geopera_kernel.server.domain.jobs.watch import WATCH_POLL_SECONDS
from geopera_kernel.server.errors import Code, DomainError, invalid_argument

MAX_WATCHED_JOBS = 5000


@dataclass(frozen=True)
class JobSet:
    """A batch (`batch_id`; `project_id`, when also given, must be its
    project), or a project's jobs (`project_id` with its filters)."""

    project_id: str = ""
    batch_id: str = ""
    status: str | None = None
    job_type_id: str | None = None
    after_sequences: dict[str, int] = field(default_factory=dict)

    def check(self) -> None:
        if not self.project_id and not self.batch_id:
            raise invalid_argument("WATCH_TARGET_REQUIRED", "give project_id or batch_id", field="project_id")
        if self.status is not None and self.status not in STATUSES:
            raise invalid_argument("INVALID_STATUS", f"unknown job status {self.status!r}", field="status")
        for job_id, sequence in self.after_sequences.items():
            if sequence < 0:
                raise invalid_argument(
                    "INVALID_SEQUENCE", f"after_sequences[{job_id!r}] must be >= 0", field="after_sequences"
                )


def _stopped(reason: str, message: str) -> DomainError:
    return DomainError(Code.UNAVAILABLE, reason, message + "; resume with after_sequences (the last sequence per job)")


async def set_events(
    jobs: JobService, notifications: Notifications, principal: Principal, target: JobSet, *, idle_limit: float
) -> AsyncIterator[JobEvent]:
    principal.require_scope("processing:read")
    target.check()
    members = await jobs.watch_set(
        principal,
        project_id=target.project_id,
        batch_id=target.batch_id,
        status=target.status,
        job_type_id=target.job_type_id,
        named=list(target.after_sequences),
        limit=MAX_WATCHED_JOBS,
    )
    ids = [j.id for j in members]
    with notifications.watch_jobs(ids) as watch:
        # Subscribed before reading, so no change can slip between the two.
        current = await jobs.jobs_by_id(ids) if ids else {}
        last: dict[str, int] = {}
        inputs = {job_id: job.input_params for job_id, job in current.items()}
        behind: set[str] = set()
        for job_id in ids:
            job = current.get(job_id)
            if job is None:
                continue
            after = target.after_sequences.get(job_id, 0)
            if after == 0:
                yield JobEvent(job.sequence, "snapshot", job.update_time, job)
                if job.terminal:
                    continue
                last[job_id] = job.sequence
            elif after >= job.sequence and job.terminal:
                continue  # the client has every event of this one already
            else:
                last[job_id] = after
                if after < job.sequence:
                    behind.add(job_id)
        last_news = time.monotonic()
        while last:  # the jobs still open
            if behind:
                events, cut = await jobs.events_after_many({j: last[j] for j in behind if j in last})
                behind = set(last) if cut else set()
                for event in events:
                    job_id = event.job.id
                    if job_id not in last or event.sequence <= last[job_id]:
                        continue
                    yield event
                    last_news = time.monotonic()
                    if event.job.terminal:
                        del last[job_id]
                    else:
                        last[job_id] = event.sequence
            for note in watch.take():
                seen = last.get(note.job_id)
                if seen is None or note.sequence <= seen or note.job_id in behind:
                    continue
                announced = note.event(inputs[note.job_id]) if note.sequence == seen + 1 else None
                if announced is None:
                    behind.add(note.job_id)  # a gap, or no snapshot: read the table
                    continue
                yield announced
                last_news = time.monotonic()
                if announced.job.terminal:
                    del last[note.job_id]
                else:
                    last[note.job_id] = announced.sequence
            if behind or watch.pending or not last:
                continue
            if notifications.closing.is_set():
                raise _stopped("SERVER_SHUTTING_DOWN", "the server is stopping")
            idle = time.monotonic() - last_news
            if idle >= idle_limit:
                raise _stopped("WATCH_IDLE", f"no job of the set had an event for {idle_limit:g} s")
            try:
                await asyncio.wait_for(watch.wake.wait(), timeout=min(WATCH_POLL_SECONDS, idle_limit - idle))
            except TimeoutError:
                behind = set(last)  # a safety net for a lost announcement
            if not watch.pending:
                behind = set(last)  # woken without news: the listener reconnected
