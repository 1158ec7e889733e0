"""The MCP server's side of the wire: a grpc.aio client of `KernelService`
(Execute and WatchJob) with the caller's bearer token, and kernel errors
turned into the JSON body the HTTP projection returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message

from geopera.v1 import kernel_pb2, kernel_pb2_grpc
from geopera_kernel.raster import tracing
from geopera_kernel.server.api.registry import Operation
from geopera_kernel.server.edge.status import error_body, status_details

USER_AGENT = "geopera-mcp/0.1.0"
# A tool call must answer well under a minute (MCP hosts commonly give up at 60 s).
CALL_TIMEOUT_SECONDS = 45.0
_RETRY_BACKOFF = (0.2, 0.5, 1.0)
_CHANNEL_OPTIONS = [
    ("grpc.primary_user_agent", USER_AGENT),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]


class KernelError(Exception):
    """A failed call, as the JSON body the HTTP projection would answer:
    `{code, reason, message, request_id, details: {metadata, field_violations,
    expected_schema}}`."""

    def __init__(
        self,
        code: str,
        reason: str,
        message: str,
        *,
        request_id: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: list[dict[str, str]] | None = None,
        expected_schema: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.request_id = request_id
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations or [])
        self.expected_schema = expected_schema

    def body(self) -> dict[str, Any]:
        return error_body(
            self.code, self.reason, self.message, self.request_id, self.metadata, self.field_violations,
            self.expected_schema,
        )  # fmt: skip


def error_from_rpc(err: grpc.aio.AioRpcError) -> KernelError:
    code = err.code().name if err.code() is not None else "UNKNOWN"
    trailing = err.trailing_metadata() or ()
    details = status_details(trailing)
    # A status without ErrorInfo (e.g. a transport failure): the code is the reason.
    metadata = details.metadata
    request_id = metadata.pop("request_id", "")
    if not request_id:
        for key, value in trailing:
            if key == "x-request-id":
                request_id = value.decode() if isinstance(value, bytes) else str(value)
    return KernelError(
        code, details.reason or code, err.details() or "", request_id=request_id, metadata=metadata,
        field_violations=details.field_violations, expected_schema=details.expected_schema,
    )  # fmt: skip


def _retryable(error: KernelError, operation: Operation) -> bool:
    """Safe to send again: nothing ran (UNAVAILABLE) and the operation reads,
    is repeatable or carries an idempotency key (every call of an operation
    that honours one does, from this server); a call whose key is still in
    flight (ABORTED `IDEMPOTENCY_KEY_IN_USE`)."""
    if error.code == "UNAVAILABLE":
        return operation.side_effect == "read" or operation.idempotency_key or operation.repeatable
    return error.code == "ABORTED" and error.reason == "IDEMPOTENCY_KEY_IN_USE"


class Kernel:
    """A connection to one kernel, calling as the token's principal."""

    def __init__(self, target: str, token: str | None, *, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.target = target
        self._token = token
        if credentials is not None:
            self._channel = grpc.aio.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._stub = kernel_pb2_grpc.KernelServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    def metadata(self, idempotency_key: str | None = None) -> list[tuple[str, str]]:
        md = [("authorization", f"Bearer {self._token}")] if self._token else []
        traceparent = tracing.current_traceparent()  # '' unless a tool call's span is current
        if traceparent:
            md.append(("traceparent", traceparent))
        if idempotency_key is not None:
            md.append(("idempotency-key", idempotency_key))
        return md

    async def execute(
        self,
        operation: Operation,
        params: Message | None,
        *,
        idempotency_key: str | None = None,
        time_budget: float = CALL_TIMEOUT_SECONDS,
        retry: bool = True,
        validate_only: bool = False,
    ) -> Message:
        """Run one operation (or only validate it: ExecuteRequest.validate_only);
        `params=None` sends no params at all (used to probe scopes: the server
        refuses before anything runs). Raises `KernelError`."""
        request = kernel_pb2.ExecuteRequest(operation=operation.name, validate_only=validate_only)
        if params is not None:
            packed = any_pb2.Any()
            packed.Pack(params)
            request.params.CopyFrom(packed)
        deadline = time.monotonic() + time_budget
        metadata = self.metadata(idempotency_key)
        for attempt in range(len(_RETRY_BACKOFF) + 1):
            remaining = deadline - time.monotonic()
            try:
                response = await self._stub.Execute(request, metadata=metadata, timeout=max(remaining, 0.01))
                break
            except grpc.aio.AioRpcError as err:
                error = error_from_rpc(err)
            if not retry or attempt == len(_RETRY_BACKOFF) or not _retryable(error, operation):
                raise error
            delay = _RETRY_BACKOFF[attempt]
            if deadline - time.monotonic() <= delay + 1.0:
                raise error
            await asyncio.sleep(delay)
        result = operation.result_type()
        if not response.result.Unpack(result):
            raise KernelError(
                "INTERNAL", "RESULT_TYPE_MISMATCH",
                f"{operation.name} answered {response.result.type_url}, not {result.DESCRIPTOR.full_name}",
            )  # fmt: skip
        return result

    async def watch(self, job_id: str, *, after_sequence: int = 0) -> AsyncGenerator[kernel_pb2.WatchJobResponse, None]:
        """A job's events (`KernelService/WatchJob`); the caller bounds the time
        it waits. Raises `KernelError`."""
        call = self._stub.WatchJob(
            kernel_pb2.WatchJobRequest(job_id=job_id, after_sequence=after_sequence),
            metadata=self.metadata(),
            timeout=55.0,  # a backstop: the tool stops reading sooner
        )
        try:
            while True:
                try:
                    event = await call.read()
                except grpc.aio.AioRpcError as err:
                    raise error_from_rpc(err) from None
                if not isinstance(event, kernel_pb2.WatchJobResponse):  # grpc.aio.EOF
                    return
                yield event
        finally:
            call.cancel()
