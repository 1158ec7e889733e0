"""How the HTTP projection answers: the HTTP status of a `DomainError` and the
error JSON every route (operations, downloads, tiles, STAC) returns."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from geopera_kernel.server.edge.status import domain_error_body
from geopera_kernel.server.errors import Code, DomainError

# The usual mapping of gRPC codes to HTTP statuses (google.rpc.Code docs).
HTTP_STATUS = {
    Code.CANCELLED: 499,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.UNAUTHENTICATED: 401,
}
# Free-form params that fail their schema are "unprocessable" (as the product docs promise).
UNPROCESSABLE_REASONS = frozenset({"INVALID_ANALYTICS_PARAMS", "INVALID_JOB_PARAMS"})


def http_status(err: DomainError) -> int:
    if err.code == Code.INVALID_ARGUMENT and err.reason in UNPROCESSABLE_REASONS:
        return 422
    return HTTP_STATUS.get(err.code, 500)


def json_response(body: Any, status: int, request_id: str) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers={"X-Request-Id": request_id},
    )


def error_response(err: DomainError, request_id: str) -> web.Response:
    response = json_response(domain_error_body(err, request_id), http_status(err), request_id)
    if err.code == Code.UNAUTHENTICATED:
        response.headers["WWW-Authenticate"] = 'Bearer realm="geopera"'
    return response
