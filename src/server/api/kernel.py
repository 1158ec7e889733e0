"""KernelService: thin gRPC entry points over the registry and the services."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncIterator
from contextvars import ContextVar

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from grpc import aio

from geopera.v1 import kernel_pb2, kernel_pb2_grpc
from geopera_kernel.server.api import convert, wire
from geopera_kernel.server.api.convert import timestamp
from geopera_kernel.server.api.execute import Executor, reject_nul_characters
from geopera_kernel.server.api.registration import decode, raw_bytes
from geopera_kernel.server.api.registry import Operation
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.jobs.watch import LogFollow
from geopera_kernel.server.domain.models import UploadPart
from geopera_kernel.server.edge.call import CallInfo, current_call, current_principal, metadata_value
from geopera_kernel.server.errors import Code, DomainError, invalid_argument
from geopera_kernel.server.services import Services
from geopera_kernel.server.storage import iter_chunks

DOWNLOAD_CHUNK_BYTES = 1 << 20
# An upload part is the UploadAssetRequest's fields of the same names.
_UPLOAD_PART_FIELDS = tuple(f.name for f in dataclasses.fields(UploadPart))


def unpack_params(operation: Operation, params: any_pb2.Any, present: bool) -> Message:
    expected = operation.params_type_url
    if params.type_url == expected:  # the usual case, settled with one comparison
        return _parse_params(operation, params.value)
    if not present or not params.type_url:
        raise invalid_argument(
            "PARAMS_TYPE_MISMATCH",
            f"params is required: an Any with @type {expected}",
            field="params",
            metadata={"expected_type": expected},
        )
    if params.type_url.rsplit("/", 1)[-1] != operation.params_type.DESCRIPTOR.full_name:
        raise invalid_argument(
            "PARAMS_TYPE_MISMATCH",
            f"operation {operation.name} takes params of type {expected}, got {params.type_url}",
            field="params.@type",
            metadata={"expected_type": expected, "given_type": params.type_url[:200]},
        )
    return _parse_params(operation, params.value)


def _parse_params(operation: Operation, value: bytes) -> Message:
    try:
        return operation.params_type.FromString(value)
    except DecodeError as exc:
        expected = operation.params_type_url
        raise invalid_argument("PARAMS_UNPARSEABLE", f"params do not decode as {expected}", field="params") from exc


# The ExecuteRequest `execute_operation` decoded, with the bytes it came from: the edge
# names the operation in the call's own task right before `Execute` runs there, which
# then does not decode the same bytes again (a context variable: per call, per task).
_decoded: ContextVar[tuple[bytes, kernel_pb2.ExecuteRequest] | None] = ContextVar("geopera_execute", default=None)


def execute_operation(request: bytes) -> str:
    """The operation an encoded ExecuteRequest names, for the access log: the
    edge logs it before the call runs, also for a call it refuses (NOT_READY,
    UNAUTHENTICATED). "" when the request does not decode (refused as
    MALFORMED_REQUEST once it runs)."""
    try:
        message = kernel_pb2.ExecuteRequest.FromString(request)
    except DecodeError:
        return ""
    _decoded.set((request, message))
    return message.operation[:100]


def _execute_request(data: bytes) -> kernel_pb2.ExecuteRequest:
    """`data` decoded: as `execute_operation` left it when it decoded these very bytes."""
    decoded = _decoded.get()
    if decoded is None or decoded[0] is not data:
        return decode(kernel_pb2.ExecuteRequest, data)
    reject_nul_characters(decoded[1], "request", data)  # as `decode` does
    return decoded[1]


# By names, not by Operation: hashing that dataclass hashes all its fields.
@functools.cache
def _response_parts(name: str, result_type: str) -> tuple[bytes, bytes, int]:
    """What every ExecuteResponse of an operation starts with: its `operation`
    field, the tag of `result` and the Any's `type_url` field (with its length)."""
    head = wire.length_delimited(kernel_pb2.ExecuteResponse.OPERATION_FIELD_NUMBER, name.encode())
    type_url = wire.length_delimited(1, (wire.TYPE_URL_PREFIX + result_type).encode())
    return head + wire.tag(kernel_pb2.ExecuteResponse.RESULT_FIELD_NUMBER), type_url, len(type_url)


def _execute_response(operation: Operation, result: bytes) -> bytes:
    """ExecuteResponse{operation, result: Any(result)}, as its bytes: what
    ExecuteResponse(operation=..., result=Any.Pack(result)).SerializeToString() gives,
    joined in one copy (an item's encoding is kilobytes; this runs per call)."""
    head, type_url, type_url_size = _response_parts(operation.name, operation.result_type.DESCRIPTOR.full_name)
    if not result:  # an empty result: proto3 leaves the Any's value out
        return b"".join((head, wire.varint(type_url_size), type_url))
    value_size = wire.varint(len(result))
    packed_size = type_url_size + 1 + len(value_size) + len(result)
    return b"".join((head, wire.varint(packed_size), type_url, wire.ANY_VALUE_TAG, value_size, result))


class KernelServicer(kernel_pb2_grpc.KernelServiceServicer):
    """The edge (`geopera_kernel.server.edge.interceptor`) runs every call: a handler runs
    only once the services are attached, for an authenticated caller."""

    _executor: Executor
    _services: Services

    def attach(self, executor: Executor) -> None:
        self._executor = executor
        self._services = executor.services

    # Bytes in and out, not the messages the generated servicer declares: registered
    # without a (de)serializing wrapper (registration.raw_bytes), it decodes the request
    # itself, and a result the operation has encoded already is sent as it is.
    @raw_bytes
    async def Execute(self, data: bytes, context: aio.ServicerContext) -> bytes:  # type: ignore[override]
        """Answers the serialized ExecuteResponse."""
        request = _execute_request(data)
        call = current_call()  # its operation named by the edge (execute_operation)
        principal = call.principal
        assert principal is not None  # (authenticated by the edge)
        operation = self._executor.resolve(request.operation)
        principal.require_scope(operation.scope)
        params = unpack_params(operation, request.params, request.HasField("params"))
        # Only operations that honour a key read it (the others ignore one sent).
        key = metadata_value(context, "idempotency-key") if operation.idempotency_key else None
        result = await self._executor.run(
            operation, principal, params, key, call, validate_only=request.validate_only, encoded=request.params.value
        )
        return _execute_response(operation, wire.result_bytes(result))

    async def WatchJob(
        self, request: kernel_pb2.WatchJobRequest, context: aio.ServicerContext
    ) -> AsyncIterator[kernel_pb2.WatchJobResponse]:
        call = current_call()
        principal = current_principal()
        sent = 0
        with self._services.streams.hold(principal.id):
            logs = LogFollow(request.after_log_sequence, int(request.min_log_level)) if request.include_logs else None
            async for event in self._executor.watch(principal, request.job_id, request.after_sequence, logs):
                yield convert.watch_response(event)
                sent += 1
        call.extra["events"] = sent

    async def WatchJobs(
        self, request: kernel_pb2.WatchJobsRequest, context: aio.ServicerContext
    ) -> AsyncIterator[kernel_pb2.WatchJobResponse]:
        call = current_call()
        principal = current_principal()
        target = convert.job_set(request)
        sent = 0
        with self._services.streams.hold(principal.id):
            async for event in self._executor.watch_set(principal, target):
                yield convert.watch_response(event)
                sent += 1
        call.extra["events"] = sent

    async def UploadAsset(
        self, request_iterator: AsyncIterator[kernel_pb2.UploadAssetRequest], context: aio.ServicerContext
    ) -> kernel_pb2.UploadAssetResponse:
        principal = current_principal()

        async def parts() -> AsyncIterator[UploadPart]:
            async for message in request_iterator:
                yield UploadPart(**{name: getattr(message, name) for name in _UPLOAD_PART_FIELDS})

        with self._services.streams.hold(principal.id):
            upload = await self._services.catalog.receive_upload(principal, parts())
        current_call().extra["bytes"] = upload.size_bytes
        return kernel_pb2.UploadAssetResponse(
            upload_id=upload.id,
            committed_size=upload.size_bytes,
            sha256=upload.sha256,
            expire_time=timestamp(upload.expire_time),
        )

    async def DownloadAsset(
        self, request: kernel_pb2.DownloadAssetRequest, context: aio.ServicerContext
    ) -> AsyncIterator[kernel_pb2.DownloadAssetResponse]:
        principal = current_principal()
        with self._services.streams.hold(principal.id):
            async for message in self._download(principal, request, current_call()):
                yield message

    async def _download(
        self, principal: Principal, request: kernel_pb2.DownloadAssetRequest, call: CallInfo
    ) -> AsyncIterator[kernel_pb2.DownloadAssetResponse]:
        ref = await self._services.catalog.asset_file(principal, request.resource_name)
        if request.read_offset < 0 or request.read_offset > ref.size_bytes or request.read_limit < 0:
            raise DomainError(
                Code.OUT_OF_RANGE,
                "INVALID_READ_OFFSET",
                f"read_offset must be 0..{ref.size_bytes} and read_limit >= 0",
            )
        stream = await asyncio.to_thread(self._services.storage.open_read, ref.storage_key)
        try:
            chunks = iter_chunks(stream, request.read_offset, request.read_limit, DOWNLOAD_CHUNK_BYTES)
            offset = request.read_offset
            first = True
            while True:
                data = await asyncio.to_thread(next, chunks, None)
                if data is None and not first:
                    break
                message = kernel_pb2.DownloadAssetResponse(data=data or b"", offset=offset)
                if first:
                    message.total_size = ref.size_bytes
                    message.media_type = ref.media_type
                    message.sha256 = ref.sha256
                    first = False
                yield message
                if data is None:
                    break
                offset += len(data)
        finally:
            stream.close()
        call.extra["bytes"] = offset - request.read_offset
