"""One HTTP request through the edge, as the gRPC interceptor runs an RPC: its
request id (also on the response, streamed ones included), admission, a NUL in
the path or query refused, error mapping and the access log line. What the
request does, authentication included, is the caller's `work`: a bearer token
for `/v1/op`, a bearer token or a URL signature for the resource routes
(`rest.access`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from geopera_kernel.server.edge.call import CallInfo, Edge
from geopera_kernel.server.edge.status import unexpected_error
from geopera_kernel.server.errors import DomainError, invalid_argument

log = logging.getLogger(__name__)

_REQUEST_ID = "geopera_request_id"

Work = Callable[[CallInfo], Awaitable[web.StreamResponse]]
OnError = Callable[[DomainError, CallInfo], Awaitable[web.StreamResponse]]


async def through_edge(
    edge: Edge, request: web.Request, rpc: str, work: Work, on_error: OnError, operation: str = ""
) -> web.StreamResponse:
    """`work(call)` for an admitted request; a `DomainError` it raises is answered by
    `on_error`, anything else is logged and answered as INTERNAL without details."""
    call = edge.begin(rpc, request.headers.get("X-Request-Id"), request.headers.get("traceparent"))
    call.operation = operation
    request[_REQUEST_ID] = call.request_id
    code = "OK"
    try:
        edge.admit(call)
        _refuse_nul_characters(request)
        return await work(call)
    except asyncio.CancelledError:
        code = "CANCELLED"
        raise
    except Exception as exc:
        if isinstance(exc, DomainError):
            error = exc
        else:
            log.exception("unhandled error in %s (request %s)", request.path, call.request_id)
            error = unexpected_error(exc, call.request_id)
        code = error.code.name
        return await on_error(error, call)
    finally:
        edge.end(call, code)


def _refuse_nul_characters(request: web.Request) -> None:
    """The HTTP side of `api.execute.reject_nul_characters`: PostgreSQL text cannot hold
    NUL and no id, name or parameter needs one, so a request whose path or query has one
    (`%00` decoded) is refused here, not deep in the store. Bodies are checked as params."""
    if "\x00" in request.path:
        raise invalid_argument("INVALID_CHARACTER", "the path must not contain NUL characters", field="path")
    for name, value in request.query.items():
        if "\x00" in name or "\x00" in value:
            raise invalid_argument(
                "INVALID_CHARACTER", "query parameters must not contain NUL characters", field=name.replace("\x00", "")
            )


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` signal: every response names its request id."""
    request_id = request.get(_REQUEST_ID)
    if request_id and "X-Request-Id" not in response.headers:
        response.headers["X-Request-Id"] = request_id
