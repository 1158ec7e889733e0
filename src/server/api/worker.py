"""WorkerService: worker sessions, the dispatcher that feeds them, and the
job-token calls (progress, failure, hand-back, RegisterOutputs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from grpc import aio

from geopera.v1 import worker_pb2, worker_pb2_grpc
from raster.cost import CostModel
from server.api import convert
from server.api.calls import metadata_value, rpc_call, unavailable
from server.api.revocation import end_on_revocation
from server.auth import Principal, job_principal
from server.domain.jobs import Assignment, JobRecord, JobTypeRecord
from server.domain.models import ItemRecord
from server.domain.outputs import CommitPart, OutputAssetSpec, OutputChunkPart, OutputItemPart, OutputPart
from server.errors import Code, DomainError, invalid_argument
from server.services import Services
from server.storage import BlobStorage

log = logging.getLogger(__name__)

MAX_CAPACITY = 64


@dataclass
class WorkerSession:
    """A connected worker, as the replica holding its stream sees it."""

    worker_id: str
    job_type_ids: list[str]
    capacity: int
    active: int = 0  # jobs it holds, as far as this replica knows
    outbox: asyncio.Queue[worker_pb2.ConnectResponse] = field(default_factory=asyncio.Queue)
    session_id: str = ""
    # The projects whose jobs it may claim (its credential's); None: every project.
    project_ids: frozenset[str] | None = None
    # Set when a reconnect of the same worker took over: this stream ends.
    superseded: asyncio.Event = field(default_factory=asyncio.Event)


class Dispatcher:
    """Claims queued jobs for the workers connected to this replica. Woken by
    NOTIFY (new job, freed slot, new worker) and, as a safety net, every
    second (for retry backoffs and missed notifications)."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self.sessions: dict[str, WorkerSession] = {}
        self._notifications = services.notifications
        self._wake = services.notifications.dispatch_wakeup
        self._task: asyncio.Task[None] | None = None
        services.notifications.on_job_end = self.job_ended

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
        counts = await self._services.jobs.active_jobs(list(self.sessions))
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
                assignments = await self._services.jobs.claim(
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
                self._services.tokens.remember_job_token(
                    assignment.token, job_principal(job.id, job.attempt, job.worker_id, job.source_item_ids)
                )
                session.outbox.put_nowait(
                    worker_pb2.ConnectResponse(assignment=_assignment(assignment, self._services.storage))
                )
        if unknown:
            self._notifications.maybe_queued = True


def _assignment(assignment: Assignment, storage: BlobStorage) -> worker_pb2.JobAssignment:
    return worker_pb2.JobAssignment(
        job=convert.job(assignment.job),
        job_token=assignment.token,
        attempt=assignment.job.attempt,
        lease_expire_time=convert.timestamp(assignment.lease_expire_time),
        source_items=[convert.item(item) for item in assignment.sources],
        source_assets=[
            worker_pb2.SourceAssetLocation(
                item_id=item.id, asset_key=asset.key, storage_uri=storage.local_path(asset.storage_key)
            )
            for item in assignment.sources
            for asset in item.assets
        ],
    )


def _declared_types(hello: worker_pb2.WorkerHello) -> list[JobTypeRecord]:
    types = []
    for index, declared in enumerate(hello.job_types):
        where = f"hello.job_types[{index}]"
        cost = declared.cost_model
        if not declared.job_type_id:
            raise invalid_argument("INVALID_JOB_TYPE", "job_type_id is required", field=f"{where}.job_type_id")
        types.append(
            JobTypeRecord(
                id=declared.job_type_id,
                description=declared.description,
                input_schema=convert.struct_to_dict(declared.input_schema) or {"type": "object"},
                cost=CostModel.checked(cost.flat, cost.per_km2, cost.per_asset, cost.minimum, f"{where}.cost_model")
                if declared.HasField("cost_model")
                else CostModel(),
            )
        )
    return types


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    """Serves as soon as the port is open; calls fail UNAVAILABLE until attached."""

    _services: Services
    _dispatcher: Dispatcher

    def __init__(self) -> None:
        self._ready = False

    def attach(self, services: Services, dispatcher: Dispatcher) -> None:
        self._services = services
        self._dispatcher = dispatcher
        self._ready = True

    async def _authenticate(self, context: aio.ServicerContext) -> Principal:
        if not self._ready:
            raise unavailable("the server is starting; retry shortly")
        return await self._services.tokens.authenticate(metadata_value(context, "authorization"))

    async def Connect(
        self, request_iterator: AsyncIterator[worker_pb2.ConnectRequest], context: aio.ServicerContext
    ) -> AsyncIterator[worker_pb2.ConnectResponse]:
        async with rpc_call(context, "Connect") as call:
            principal = await self._authenticate(context)
            call.principal_id = principal.id
            principal.require_scope("worker")
            end_on_revocation(context, self._services.tokens, call)
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("message") != "hello":
                raise invalid_argument("HELLO_REQUIRED", "the first message must be a hello", field="hello")
            hello = first.hello
            if not 1 <= hello.capacity <= MAX_CAPACITY:
                raise invalid_argument("INVALID_CAPACITY", f"capacity must be 1..{MAX_CAPACITY}", field="capacity")
            jobs = self._services.jobs
            declared = _declared_types(hello)
            await jobs.declare_job_types(principal, declared)
            worker = await jobs.register_worker(
                principal, hello.worker_id, hello.name or "worker", [t.id for t in declared], hello.capacity
            )
            call.extra["worker_id"] = worker.id
            # A worker credential limited to projects claims only their jobs.
            projects = None if principal.is_admin else principal.project_ids or None
            session = WorkerSession(
                worker.id, worker.job_type_ids, worker.capacity, session_id=worker.session_id, project_ids=projects
            )
            yield worker_pb2.ConnectResponse(
                welcome=worker_pb2.WorkerWelcome(
                    worker_id=worker.id,
                    heartbeat_interval_seconds=jobs.policy.heartbeat_seconds,
                    lease_seconds=jobs.policy.lease_seconds,
                )
            )

            def cancel(job_id: str) -> None:
                session.outbox.put_nowait(
                    worker_pb2.ConnectResponse(cancel=worker_pb2.JobCancellation(job_id=job_id, reason="cancelled"))
                )

            reader = asyncio.create_task(self._read_heartbeats(request_iterator, worker.id, session))
            previous = self._dispatcher.sessions.get(worker.id)
            if previous is not None:
                previous.superseded.set()
            self._dispatcher.sessions[worker.id] = session
            self._dispatcher.wake()
            closing = asyncio.ensure_future(self._services.notifications.closing.wait())
            superseded = asyncio.ensure_future(session.superseded.wait())
            getter: asyncio.Future[worker_pb2.ConnectResponse] | None = None
            try:
                with self._services.notifications.on_cancel(worker.id, cancel):
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
                if self._dispatcher.sessions.get(worker.id) is session:
                    del self._dispatcher.sessions[worker.id]
                reader.cancel()
                await jobs.worker_disconnected(worker.id, session.session_id)

    async def _read_heartbeats(
        self, request_iterator: AsyncIterator[worker_pb2.ConnectRequest], worker_id: str, session: WorkerSession
    ) -> None:
        async for message in request_iterator:
            if message.WhichOneof("message") == "heartbeat":
                if message.heartbeat.draining:
                    session.capacity = 0  # shutting down: no new assignments
                active = list(message.heartbeat.active_job_ids)
                if not await self._services.jobs.heartbeat(worker_id, active, session.session_id):
                    session.superseded.set()  # a newer session (maybe on another replica) owns the worker

    async def ReportProgress(
        self, request: worker_pb2.ReportProgressRequest, context: aio.ServicerContext
    ) -> worker_pb2.ReportProgressResponse:
        async with rpc_call(context, "ReportProgress") as call:
            principal = await self._authenticate(context)
            call.principal_id = principal.id
            cancelled = await self._services.jobs.report_progress(
                principal, request.job_id, request.progress, request.message
            )
            return worker_pb2.ReportProgressResponse(cancel_requested=cancelled)
        raise AssertionError("unreachable")

    async def ReportFailure(
        self, request: worker_pb2.ReportFailureRequest, context: aio.ServicerContext
    ) -> worker_pb2.ReportFailureResponse:
        async with rpc_call(context, "ReportFailure") as call:
            principal = await self._authenticate(context)
            call.principal_id = principal.id
            job = await self._services.jobs.report_failure(
                principal, request.job_id, request.reason, request.message, request.retryable
            )
            return worker_pb2.ReportFailureResponse(job=convert.job(job))
        raise AssertionError("unreachable")

    async def ReleaseJob(
        self, request: worker_pb2.ReleaseJobRequest, context: aio.ServicerContext
    ) -> worker_pb2.ReleaseJobResponse:
        async with rpc_call(context, "ReleaseJob") as call:
            principal = await self._authenticate(context)
            call.principal_id = principal.id
            job = await self._services.jobs.release(principal, request.job_id, request.reason)
            return worker_pb2.ReleaseJobResponse(job=convert.job(job))
        raise AssertionError("unreachable")

    async def RegisterOutputs(
        self, request_iterator: AsyncIterator[worker_pb2.RegisterOutputsRequest], context: aio.ServicerContext
    ) -> worker_pb2.RegisterOutputsResponse:
        async with rpc_call(context, "RegisterOutputs") as call:
            principal = await self._authenticate(context)
            call.principal_id = principal.id
            messages = aiter(request_iterator)
            first = await anext(messages, None)
            if first is None or not first.job_id:
                raise invalid_argument("JOB_ID_REQUIRED", "the first message must name job_id", field="job_id")

            async def parts() -> AsyncIterator[OutputPart]:
                message: worker_pb2.RegisterOutputsRequest | None = first
                while message is not None:
                    part = _output_part(message)
                    if part is not None:
                        yield part
                    message = await anext(messages, None)

            def encode(job: JobRecord, items: list[ItemRecord]) -> bytes:
                return worker_pb2.RegisterOutputsResponse(
                    job=convert.job(job), items=[convert.item(i) for i in items]
                ).SerializeToString()

            response = await self._services.outputs.register(principal, first.job_id, parts(), encode)
            return worker_pb2.RegisterOutputsResponse.FromString(response)
        raise AssertionError("unreachable")


def _output_part(message: worker_pb2.RegisterOutputsRequest) -> OutputPart | None:
    kind = message.WhichOneof("part")
    if kind == "item":
        item = message.item
        return OutputItemPart(
            output_key=item.output_key,
            name=item.name,
            geometry=convert.struct_to_dict(item.geometry),
            datetime=convert.from_timestamp(item.datetime, item.HasField("datetime"), field="item.datetime"),
            properties=convert.struct_to_dict(item.properties),
            source_item_ids=list(item.source_item_ids),
            assets=[OutputAssetSpec(a.key, list(a.roles), a.title, a.size_bytes, a.sha256) for a in item.assets],
        )
    if kind == "chunk":
        chunk = message.chunk
        return OutputChunkPart(chunk.output_key, chunk.asset_key, chunk.write_offset, chunk.data, chunk.finish_write)
    if kind == "commit":
        return CommitPart() if message.commit else None
    return None
