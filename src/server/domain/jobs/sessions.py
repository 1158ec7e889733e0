"""A worker's Connect session: its hello (job types declared, worker
registered), then assignments and cancellations out and heartbeats in, until
the worker hangs up, a reconnect supersedes it, or the server stops. The gRPC
servicer only translates messages (geopera_kernel.server.api.worker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.jobs.dispatcher import Cancellation, Dispatcher, WorkerSession
from geopera_kernel.server.domain.jobs.job_types import JobTypeRecord
from geopera_kernel.server.domain.jobs.notices import Notifications
from geopera_kernel.server.domain.jobs.records import Assignment
from geopera_kernel.server.domain.jobs.service import JobService
from geopera_kernel.server.errors import Code, DomainError, invalid_argument

MAX_CAPACITY = 64


@dataclass(frozen=True)
class WorkerHello:
    worker_id: str  # empty for a new worker
    name: str
    capacity: int
    job_types: list[JobTypeRecord]


@dataclass(frozen=True)
class Heartbeat:
    active_job_ids: list[str]
    # Shutting down: no new assignments.
    draining: bool = False


@dataclass(frozen=True)
class Welcome:
    worker_id: str
    heartbeat_interval_seconds: float
    lease_seconds: float


SessionMessage = Welcome | Assignment | Cancellation


class WorkerSessions:
    def __init__(self, jobs: JobService, notifications: Notifications, dispatcher: Dispatcher) -> None:
        self._jobs = jobs
        self._notifications = notifications
        self._dispatcher = dispatcher

    async def connect(
        self, principal: Principal, hello: WorkerHello, heartbeats: AsyncIterator[Heartbeat]
    ) -> AsyncGenerator[SessionMessage]:
        """The session's messages to the worker: a Welcome first, then
        assignments and cancellations. Ends ABORTED `WORKER_SESSION_REPLACED`
        when the same worker connected again."""
        principal.require_scope("worker")
        if not 1 <= hello.capacity <= MAX_CAPACITY:
            raise invalid_argument("INVALID_CAPACITY", f"capacity must be 1..{MAX_CAPACITY}", field="capacity")
        jobs = self._jobs
        await jobs.declare_job_types(principal, hello.job_types)
        worker = await jobs.register_worker(
            principal, hello.worker_id, hello.name or "worker", [t.id for t in hello.job_types], hello.capacity
        )
        # A worker credential limited to projects claims only their jobs.
        projects = None if principal.is_admin else principal.project_ids or None
        session = WorkerSession(
            worker.id, worker.job_type_ids, worker.capacity, session_id=worker.session_id, project_ids=projects
        )
        yield Welcome(worker.id, jobs.policy.heartbeat_seconds, jobs.policy.lease_seconds)

        def cancel(job_id: str) -> None:
            session.outbox.put_nowait(Cancellation(job_id))

        sessions = self._dispatcher.sessions
        reader = asyncio.create_task(self._read_heartbeats(heartbeats, session))
        previous = sessions.get(worker.id)
        if previous is not None:
            previous.superseded.set()
        sessions[worker.id] = session
        self._dispatcher.wake()
        closing = asyncio.ensure_future(self._notifications.closing.wait())
        superseded = asyncio.ensure_future(session.superseded.wait())
        getter: asyncio.Future[Assignment | Cancellation] | None = None
        try:
            with self._notifications.on_cancel(worker.id, cancel):
                while True:
                    getter = asyncio.ensure_future(session.outbox.get())
                    done, _ = await asyncio.wait(
                        {getter, reader, closing, superseded}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter in done:
                        yield getter.result()
                        continue
                    getter.cancel()
                    if reader in done:
                        reader.result()  # re-raises a reader failure
                    if superseded in done:
                        raise DomainError(
                            Code.ABORTED,
                            "WORKER_SESSION_REPLACED",
                            f"worker {worker.id} connected again; this older session ends",
                        )
                    break  # the worker hung up, or this server is stopping
        finally:
            for waiter in (closing, superseded, getter):  # on every exit, cancellation included
                if waiter is not None:
                    waiter.cancel()
            # Only this session's own traces: a reconnect of the same
            # worker may have replaced it already.
            if sessions.get(worker.id) is session:
                del sessions[worker.id]
            reader.cancel()
            await jobs.worker_disconnected(worker.id, session.session_id)

    async def _read_heartbeats(self, heartbeats: AsyncIterator[Heartbeat], session: WorkerSession) -> None:
        async for heartbeat in heartbeats:
            if heartbeat.draining:
                session.capacity = 0  # shutting down: no new assignments
            if not await self._jobs.heartbeat(session.worker_id, heartbeat.active_job_ids, session.session_id):
                session.superseded.set()  # a newer session (maybe on another replica) owns the worker
