"""WorkerService: the gRPC face of worker sessions (geopera_kernel.server.domain.jobs.sessions)
and of the job-token calls (progress, failure, hand-back, RegisterOutputs):
messages in, domain calls, messages out."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from grpc import aio

from geopera.v1 import worker_pb2, worker_pb2_grpc
from geopera_kernel.raster.cost import CostModel
from geopera_kernel.server.api import convert
from geopera_kernel.server.api.ops_analytics import answer_renderer
from geopera_kernel.server.domain.jobs import (
    Assignment,
    Cancellation,
    Dispatcher,
    Heartbeat,
    JobRecord,
    JobTypeRecord,
    LogRecordIn,
    Welcome,
    WorkerHello,
    WorkerSessions,
)
from geopera_kernel.server.domain.jobs.sessions import SessionMessage
from geopera_kernel.server.domain.models import ItemRecord
from geopera_kernel.server.domain.output_parts import (
    ARTIFACT_OUTPUT_KEY,
    AnalyticsResultPart,
    CommitPart,
    OutputArtifactPart,
    OutputAssetSpec,
    OutputChunkPart,
    OutputItemPart,
    OutputPart,
)
from geopera_kernel.server.edge.call import current_call, current_principal
from geopera_kernel.server.errors import invalid_argument
from geopera_kernel.server.services import Services
from geopera_kernel.server.storage import BlobStorage, object_storage


def _assignment(assignment: Assignment, storage: BlobStorage) -> worker_pb2.JobAssignment:
    # With object storage the worker reads sources and writes outputs by presigned URLs.
    bucket = object_storage(storage)
    return worker_pb2.JobAssignment(
        job=convert.job(assignment.job),
        job_token=assignment.token,
        attempt=assignment.job.attempt,
        lease_expire_time=convert.timestamp(assignment.lease_expire_time),
        source_items=[convert.item(item) for item in assignment.sources],
        source_assets=[
            worker_pb2.SourceAssetLocation(
                item_id=item.id,
                asset_key=asset.key,
                storage_uri=storage.local_path(asset.storage_key),
                download_url=bucket.presign_get(asset.storage_key) if bucket is not None else "",
            )
            for item in assignment.sources
            for asset in item.assets
        ],
        presigned_uploads=bucket is not None,
        traceparent=assignment.traceparent,
    )


async def _heartbeats(request_iterator: AsyncIterator[worker_pb2.ConnectRequest]) -> AsyncIterator[Heartbeat]:
    async for message in request_iterator:
        if message.WhichOneof("message") == "heartbeat":
            heartbeat = message.heartbeat
            yield Heartbeat(list(heartbeat.active_job_ids), draining=heartbeat.draining)


def _response(message: SessionMessage, storage: BlobStorage) -> worker_pb2.ConnectResponse:
    if isinstance(message, Welcome):
        return worker_pb2.ConnectResponse(
            welcome=worker_pb2.WorkerWelcome(
                worker_id=message.worker_id,
                heartbeat_interval_seconds=message.heartbeat_interval_seconds,
                lease_seconds=message.lease_seconds,
            )
        )
    if isinstance(message, Cancellation):
        return worker_pb2.ConnectResponse(
            cancel=worker_pb2.JobCancellation(job_id=message.job_id, reason=message.reason)
        )
    return worker_pb2.ConnectResponse(assignment=_assignment(message, storage))


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
    """The edge (`geopera_kernel.server.edge.interceptor`) runs every call: a handler runs
    only once the services are attached, for an authenticated caller."""

    _services: Services
    _sessions: WorkerSessions

    def attach(self, services: Services, dispatcher: Dispatcher) -> None:
        self._services = services
        self._sessions = WorkerSessions(services.jobs, services.notifications, dispatcher)

    async def Connect(
        self, request_iterator: AsyncIterator[worker_pb2.ConnectRequest], context: aio.ServicerContext
    ) -> AsyncIterator[worker_pb2.ConnectResponse]:
        principal = current_principal()
        principal.require_scope("worker")
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("message") != "hello":
            raise invalid_argument("HELLO_REQUIRED", "the first message must be a hello", field="hello")
        hello = first.hello
        session = WorkerHello(hello.worker_id, hello.name, hello.capacity, _declared_types(hello))
        # Closed with this stream, so the session's cleanup runs before the call ends.
        messages = self._sessions.connect(principal, session, _heartbeats(request_iterator))
        async with contextlib.aclosing(messages):
            async for message in messages:
                if isinstance(message, Welcome):
                    current_call().extra["worker_id"] = message.worker_id
                yield _response(message, self._services.storage)

    async def ReportProgress(
        self, request: worker_pb2.ReportProgressRequest, context: aio.ServicerContext
    ) -> worker_pb2.ReportProgressResponse:
        principal = current_principal()
        cancelled = await self._services.jobs.report_progress(
            principal, request.job_id, request.progress, request.message
        )
        return worker_pb2.ReportProgressResponse(cancel_requested=cancelled)

    async def ReportFailure(
        self, request: worker_pb2.ReportFailureRequest, context: aio.ServicerContext
    ) -> worker_pb2.ReportFailureResponse:
        principal = current_principal()
        job = await self._services.jobs.report_failure(
            principal, request.job_id, request.reason, request.message, request.retryable
        )
        return worker_pb2.ReportFailureResponse(job=convert.job(job))

    async def ReleaseJob(
        self, request: worker_pb2.ReleaseJobRequest, context: aio.ServicerContext
    ) -> worker_pb2.ReleaseJobResponse:
        principal = current_principal()
        job = await self._services.jobs.release(principal, request.job_id, request.reason)
        return worker_pb2.ReleaseJobResponse(job=convert.job(job))

    async def WriteJobLogs(
        self, request: worker_pb2.WriteJobLogsRequest, context: aio.ServicerContext
    ) -> worker_pb2.WriteJobLogsResponse:
        principal = current_principal()
        records = [
            LogRecordIn(
                log_time=convert.from_timestamp(r.log_time, r.HasField("log_time"), field=f"records[{i}].log_time"),
                level=int(r.level),
                message=r.message,
                fields=convert.struct_to_dict(r.fields),
            )
            for i, r in enumerate(request.records)
        ]
        stored, dropped = await self._services.jobs.write_logs(principal, request.job_id, records)
        return worker_pb2.WriteJobLogsResponse(stored_entries=stored, dropped_entries=dropped)

    async def SignOutputUploads(
        self, request: worker_pb2.SignOutputUploadsRequest, context: aio.ServicerContext
    ) -> worker_pb2.SignOutputUploadsResponse:
        principal = current_principal()
        targets = [(f.output_key, f.asset_key) for f in request.files]
        signed = await self._services.outputs.sign_uploads(principal, request.job_id, targets)
        return worker_pb2.SignOutputUploadsResponse(
            uploads=[
                worker_pb2.OutputUpload(
                    output_key=s.output_key,
                    asset_key=s.asset_key,
                    href=s.href,
                    url=s.url,
                    expire_time=convert.timestamp(s.expire_time),
                )
                for s in signed
            ]
        )

    async def RegisterOutputs(
        self, request_iterator: AsyncIterator[worker_pb2.RegisterOutputsRequest], context: aio.ServicerContext
    ) -> worker_pb2.RegisterOutputsResponse:
        principal = current_principal()
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

        render = answer_renderer(self._services.analytics.methods)
        response = await self._services.outputs.register(principal, first.job_id, parts(), encode, render)
        return worker_pb2.RegisterOutputsResponse.FromString(response)


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
            assets=[
                OutputAssetSpec(a.key, list(a.roles), a.title, a.size_bytes, a.sha256, a.href) for a in item.assets
            ],
        )
    if kind == "chunk":
        chunk = message.chunk
        if chunk.artifact_key:
            if chunk.output_key or chunk.asset_key:
                raise invalid_argument(
                    "INVALID_OUTPUT", "an artifact's chunk names no output_key or asset_key", field="chunk.artifact_key"
                )
            where = (ARTIFACT_OUTPUT_KEY, chunk.artifact_key)
        else:
            where = (chunk.output_key, chunk.asset_key)
        return OutputChunkPart(*where, chunk.write_offset, chunk.data, chunk.finish_write)
    if kind == "artifact":
        a = message.artifact
        return OutputArtifactPart(a.key, a.media_type, a.title, a.size_bytes, a.sha256)
    if kind == "analytics_result":
        answer = message.analytics_result
        return AnalyticsResultPart(answer.operation, convert.struct_to_dict(answer.result))
    if kind == "commit":
        return CommitPart() if message.commit else None
    return None
