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
- the access log line.

The per-call work is kept small: the wrapped handler of each method is built
once, and a call reads its metadata once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc import aio

from server.edge.call import CallInfo, Edge
from server.edge.revocation import end_on_revocation
from server.edge.status import to_grpc_status, unexpected_error
from server.errors import DomainError

log = logging.getLogger(__name__)

Behavior = Callable[[Any, aio.ServicerContext], Any]


def _call_metadata(context: aio.ServicerContext) -> tuple[str | None, str | None]:
    """(x-request-id, authorization) of the call, in one pass over its metadata."""
    request_id = authorization = None
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            authorization = value.decode() if isinstance(value, bytes) else value
        elif key == "x-request-id":
            request_id = value.decode() if isinstance(value, bytes) else value
    return request_id, authorization


def _failure(exc: Exception, call: CallInfo) -> DomainError:
    if isinstance(exc, DomainError):
        return exc
    log.exception("unhandled error in %s (request %s)", call.rpc, call.request_id)
    return unexpected_error(exc, call.request_id)


def _cancelled_code(context: aio.ServicerContext) -> str:
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"


class EdgeInterceptor(aio.ServerInterceptor):
    """Wraps the handlers of `services` (full names) in the edge."""

    def __init__(self, edge: Edge, services: Iterable[str]) -> None:
        self._edge = edge
        self._services = frozenset(services)
        # method -> (the handler found, the handler answered): built once per method.
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method  # type: ignore[attr-defined]  # (the stubs leave it out)
        known = self._handlers.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        if handler is None:
            return handler  # an unknown method: grpc answers UNIMPLEMENTED
        service, _, rpc = method.lstrip("/").rpartition("/")
        answered = self._wrap(rpc, handler) if service in self._services else handler
        self._handlers[method] = (handler, answered)
        return answered

    def _wrap(self, rpc: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(self._streaming(rpc, handler.stream_stream), **serializers)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(self._unary(rpc, handler.stream_unary, True), **serializers)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(self._streaming(rpc, handler.unary_stream), **serializers)
        return grpc.unary_unary_rpc_method_handler(self._unary(rpc, handler.unary_unary, False), **serializers)

    def _unary(self, rpc: str, behavior: Behavior, stream: bool) -> Behavior:
        """A call with one response (its request may be a stream)."""
        edge = self._edge

        async def answer(request: Any, context: aio.ServicerContext) -> Any:
            given_id, authorization = _call_metadata(context)
            call = edge.begin(rpc, given_id)
            code = "OK"
            try:
                context.set_trailing_metadata((("x-request-id", call.request_id),))
                edge.admit(call)
                principal = await edge.authenticate(call, authorization)
                if stream and principal.kind != "job":
                    end_on_revocation(context, edge.tokens, call, authorization)
                return await behavior(request, context)
            except aio.AbortError:
                raise
            except asyncio.CancelledError:
                code = _cancelled_code(context)
                raise
            except Exception as exc:
                error = _failure(exc, call)
                code = error.code.name
                await context.abort_with_status(to_grpc_status(error, call.request_id))
            finally:
                edge.end(call, code)

        return answer

    def _streaming(self, rpc: str, behavior: Behavior) -> Behavior:
        """A call with a stream of responses."""
        edge = self._edge

        async def answer(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            given_id, authorization = _call_metadata(context)
            call = edge.begin(rpc, given_id)
            code = "OK"
            try:
                context.set_trailing_metadata((("x-request-id", call.request_id),))
                edge.admit(call)
                principal = await edge.authenticate(call, authorization)
                if principal.kind != "job":
                    end_on_revocation(context, edge.tokens, call, authorization)
                async for response in behavior(request, context):
                    yield response
            except aio.AbortError:
                raise
            except asyncio.CancelledError:
                code = _cancelled_code(context)
                raise
            except Exception as exc:
                error = _failure(exc, call)
                code = error.code.name
                await context.abort_with_status(to_grpc_status(error, call.request_id))
            finally:
                edge.end(call, code)

        return answer
