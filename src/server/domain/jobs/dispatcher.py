"""The dispatcher: claims queued jobs for the workers connected to this
replica and puts each assignment in its worker session's outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from geopera_kernel.server.auth import TokenService, job_principal
from geopera_kernel.server.domain.jobs.notices import Notifications
from geopera_kernel.server.domain.jobs.records import Assignment
from geopera_kernel.server.domain.jobs.service import JobService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cancellation:
    """Tells a worker to stop a job (it was cancelled)."""

    job_id: str
    reason: str = "cancelled"


@dataclass
class WorkerSession:
    """A connected worker, as the replica holding its stream sees it."""

    worker_id: str
    job_type_ids: list[str]
    capacity: int
    active: int = 0  # jobs it holds, as far as this replica knows
    outbox: asyncio.Queue[Assignment | Cancellation] = field(default_factory=asyncio.Queue)
    session_id: str = ""
    # The projects whose jobs it may claim (its credential's); None: every project.
    project_ids: frozenset[str] | None = None
    # Set when a reconnect of the same worker took over: this stream ends.
    superseded: asyncio.Event = field(default_factory=asyncio.Event)


class Dispatcher:
    """Claims queued jobs for the workers connected to this replica. Woken by
    NOTIFY (new job, freed slot, new worker) and, as a safety net, every
    second (for retry backoffs and missed notifications)."""

    def __init__(self, jobs: JobService, notifications: Notifications, tokens: TokenService) -> None:
        self._jobs = jobs
        self._tokens = tokens
        self.sessions: dict[str, WorkerSession] = {}
        self._notifications = notifications
        self._wake = notifications.dispatch_wakeup
        self._task: asyncio.Task[None] | None = None
        notifications.on_job_end = self.job_ended

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        """Claim now (a worker connected): its job types may have queued jobs."""
        self._notifications.maybe_queued = True
        self._wake.set()

    def job_ended(self, worker_id: str) -> None:
        """A job of `worker_id` reached a terminal state: a slot is free."""
        session = self.sessions.get(worker_id)
        if session is not None and session.active > 0:
            session.active -= 1

    async def _resync(self) -> None:
        """Local slot counts are an estimate kept by events; the database is
        the truth (a job can also leave a worker by lease expiry or hand-back)."""
        counts = await self._jobs.active_jobs(list(self.sessions))
        for worker_id, session in self.sessions.items():
            session.active = counts.get(worker_id, 0)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except TimeoutError:
                # The safety net: retry backoffs that ran out, missed notifications.
                self._notifications.maybe_queued = True
                with contextlib.suppress(Exception):
                    await self._resync()
            self._wake.clear()
            if self._notifications.maybe_queued:
                await self._dispatch_once()

    async def _dispatch_once(self) -> None:
        # Claim for the least busy workers first, and stop asking for a set
        # of job types (within a set of projects) once a claim came back
        # short: their queue is empty.
        drained: list[tuple[frozenset[str], frozenset[str] | None]] = []
        # Cleared now (a notification during the claims sets it again) and set
        # back unless every session's job types were found drained.
        self._notifications.maybe_queued = False
        unknown = False
        for session in sorted(self.sessions.values(), key=lambda s: s.active):
            free = session.capacity - session.active
            types, projects = frozenset(session.job_type_ids), session.project_ids
            if any(
                types <= done and (scope is None or (projects is not None and projects <= scope))
                for done, scope in drained
            ):
                continue
            if free <= 0:
                unknown = True  # full: whether its types have queued jobs is not known
                continue
            try:
                assignments = await self._jobs.claim(
                    session.worker_id, session.job_type_ids, session.capacity,
                    session_id=session.session_id, project_ids=projects,
                )  # fmt: skip
            except Exception:
                unknown = True
                log.exception("claiming jobs for worker %s failed", session.worker_id)
                continue
            session.active += len(assignments)
            if len(assignments) < free:
                drained.append((types, projects))
            else:
                unknown = True
            for assignment in assignments:
                if self.sessions.get(session.worker_id) is not session:
                    break  # gone meanwhile: the lease expires and the job is re-dispatched
                job = assignment.job
                self._tokens.remember_job_token(
                    assignment.token, job_principal(job.id, job.attempt, job.worker_id, job.source_item_ids)
                )
                session.outbox.put_nowait(assignment)
        if unknown:
            self._notifications.maybe_queued = True
