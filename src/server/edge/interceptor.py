"""The gRPC transport edge: one grpc.aio server interceptor, built in the
composition root, that runs every RPC of the kernel's own services (health and
reflection pass through as they are):

- the request id (the caller's `x-request-id`, else a new one), sent back in
  the trailers whatever the outcome;
- admission (UNAVAILABLE `SERVER_SHUTTING_DOWN` once the server stops),
  readiness (UNAVAILABLE `NOT_READY` until the services are attached) and
  authentication: a handler runs only for an authenticated caller, whom it
  finds with `current_principal()`;
- streams end when their token is revoked (`revocation.end_on_revocation`);
  job tokens, bound to one attempt, are checked by the job calls instead;
- error mapping: whatever the handler raises becomes a `google.rpc.Status`
  (`status.to_grpc_status`), an exception no handler turned into a
  `DomainError` is logged and answered INTERNAL (or UNAVAILABLE for a lost
  database);
- the call's metrics and, when tracing is on, its span (a child of the
  caller's `traceparent` metadata);
- the access log line, which names the operation a request runs (for
  `Execute`, from its request, so that a call refused before it runs says
  what it asked for);
- a client-streaming call refused before its client finished writing is
  answered once the rest of its request stream is read (within bounds), so
  that the client sees the status sent (`_drain`).

The per-call work is kept small: the wrapped handler of each method is built
once, and a call reads its metadata once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeAlias

import grpc
from grpc import aio

from geopera_kernel.server.edge.call import CallInfo, Edge
from geopera_kernel.server.edge.revocation import end_on_revocation
from geopera_kernel.server.edge.status import to_grpc_status, unexpected_error
from geopera_kernel.server.errors import DomainError

log = logging.getLogger(__name__)

# A handler's behaviour: (request or request iterator, context) -> response(s).
Behavior = Callable[..., Any]
# The operation a (still encoded) request names, for the access log.
OperationOf = Callable[[bytes], str]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # (generic in the stubs only)

# What the edge reads of a refused call's request stream before answering. A grpc.aio
# client whose write fails because the call already ended reports INTERNAL "Internal error
# from Core" in place of the status it was sent (grpc/grpc#36066); reading on until the
# client half-closes lets its writes complete. Bounded, so a large upload refused at its
# first message is answered after at most this much more of it.
DRAIN_MAX_BYTES = 8 << 20
DRAIN_MAX_SECONDS = 2.0


async def _drain(requests: AsyncIterator[Any]) -> None:
    """Reads what is left of a refused call's request stream, within the bounds above."""
    read = 0
    with contextlib.suppress(Exception):  # the bounds' timeout, or a stream already broken
        async with asyncio.timeout(DRAIN_MAX_SECONDS):
            async for message in requests:
                read += len(message) if isinstance(message, bytes) else message.ByteSize()
                if read > DRAIN_MAX_BYTES:
                    return


def _call_metadata(context: aio.ServicerContext) -> tuple[str | None, str | None, str | None]:
    """(x-request-id, authorization, traceparent) of the call, in one pass over its metadata."""
    request_id = authorization = traceparent = None
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            authorization = value.decode() if isinstance(value, bytes) else value
        elif key == "x-request-id":
            request_id = value.decode() if isinstance(value, bytes) else value
        elif key == "traceparent":
            traceparent = value.decode() if isinstance(value, bytes) else value
    return request_id, authorization, traceparent


class _Edged:
    """One RPC inside the edge, as `async with`: entering opens the call
    (request id trailer, admission, authentication, the revocation watch of a
    stream); leaving maps what the handler raised onto a status and writes
    the access log line. A class, not a generator-based context manager: it
    runs for every call."""

    __slots__ = ("_authorization", "_call", "_context", "_edge", "_requests", "_stream")

    def __init__(
        self,
        edge: Edge,
        rpc: str,
        context: aio.ServicerContext,
        stream: bool,
        operation: str = "",
        requests: AsyncIterator[Any] | None = None,
    ) -> None:
        given_id, self._authorization, traceparent = _call_metadata(context)
        self._edge, self._context, self._stream, self._requests = edge, context, stream, requests
        self._call = edge.begin(rpc, given_id, traceparent)
        self._call.operation = operation

    async def __aenter__(self) -> CallInfo:
        call, edge = self._call, self._edge
        try:
            self._context.set_trailing_metadata((("x-request-id", call.request_id),))
            edge.admit(call)
            principal = edge.authenticate_cached(call, self._authorization)
            if principal is None:
                principal = await edge.authenticate(call, self._authorization)
            if self._stream and principal.kind != "job":
                end_on_revocation(self._context, edge.tokens, call, self._authorization)
        except BaseException as exc:  # refused: answered and logged as the handler's errors are
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return call

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        call, context = self._call, self._context
        code = "OK"
        try:
            if isinstance(exc, asyncio.CancelledError):
                code = _cancelled_code(context)
            elif isinstance(exc, Exception) and not isinstance(exc, aio.AbortError):
                if isinstance(exc, DomainError):
                    error = exc
                else:
                    log.exception("unhandled error in %s (request %s)", call.rpc, call.request_id, exc_info=exc)
                    error = unexpected_error(exc, call.request_id)
                code = error.code.name
                if self._requests is not None:
                    await _drain(self._requests)
                await context.abort_with_status(to_grpc_status(error, call.request_id))
        finally:
            self._edge.end(call, code)


def _cancelled_code(context: aio.ServicerContext) -> str:
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"


class EdgeInterceptor(aio.ServerInterceptor):
    """Wraps the handlers of `services` (full names) in the edge; `operations`
    names the operation of a unary method's request (by method path)."""

    def __init__(
        self, edge: Edge, services: Iterable[str], operations: Mapping[str, OperationOf] | None = None
    ) -> None:
        self._edge = edge
        self._services = frozenset(services)
        self._operations = dict(operations or {})
        # method -> (the handler found, the handler answered): built once per method.
        self._handlers: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        known = self._handlers.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        if handler is None:
            return handler  # an unknown method: grpc answers UNIMPLEMENTED
        service, _, rpc = method.lstrip("/").rpartition("/")
        answered = self._wrap(rpc, handler, self._operations.get(method)) if service in self._services else handler
        self._handlers[method] = (handler, answered)
        return answered

    def _wrap(self, rpc: str, handler: Handler, operation_of: OperationOf | None) -> Handler:
        decode, encode = handler.request_deserializer, handler.response_serializer
        if handler.request_streaming and handler.response_streaming:
            assert handler.stream_stream is not None
            return grpc.stream_stream_rpc_method_handler(self._streaming(rpc, handler.stream_stream), decode, encode)
        if handler.request_streaming:
            assert handler.stream_unary is not None
            return grpc.stream_unary_rpc_method_handler(self._unary(rpc, handler.stream_unary, True), decode, encode)
        if handler.response_streaming:
            assert handler.unary_stream is not None
            return grpc.unary_stream_rpc_method_handler(self._streaming(rpc, handler.unary_stream), decode, encode)
        assert handler.unary_unary is not None
        behavior = handler.unary_unary
        if operation_of is not None:
            return grpc.unary_unary_rpc_method_handler(self._named(rpc, behavior, operation_of), decode, encode)
        return grpc.unary_unary_rpc_method_handler(self._unary(rpc, behavior, False), decode, encode)

    def _unary(self, rpc: str, behavior: Behavior, stream: bool) -> Behavior:
        """A call with one response (its request may be a stream)."""
        edge = self._edge

        async def answer(request: Any, context: aio.ServicerContext) -> Any:
            async with _Edged(edge, rpc, context, stream, requests=request if stream else None):
                return await behavior(request, context)

        return answer

    def _named(self, rpc: str, behavior: Behavior, operation_of: OperationOf) -> Behavior:
        """A unary call whose request names the operation it runs."""
        edge = self._edge

        async def answer(request: bytes, context: aio.ServicerContext) -> Any:
            async with _Edged(edge, rpc, context, False, operation_of(request)):
                return await behavior(request, context)

        return answer

    def _streaming(self, rpc: str, behavior: Behavior) -> Behavior:
        """A call with a stream of responses."""
        edge = self._edge

        async def answer(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            async with _Edged(edge, rpc, context, True):
                async for response in behavior(request, context):
                    yield response

        return answer
