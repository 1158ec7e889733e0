"""HTTP/JSON projection: `POST /v1/op/{operation}` runs any registered operation
with its params as a JSON body (proto3 JSON mapping, snake_case names, no
`@type`), `GET /v1/jobs/{job_id}/events` streams a job as server-sent events,
and `GET /v1/openapi.json` describes both. Same auth, validation, idempotency
and errors as gRPC: it runs through the same `Executor`."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel

from geopera.v1 import kernel_pb2
from server.api import convert, jsonview
from server.api.calls import CallInfo
from server.api.execute import Executor
from server.api.revocation import until_revoked
from server.api.status import unexpected_error
from server.api.wire import result_message
from server.auth import Principal
from server.errors import Code, DomainError, invalid_argument
from server.rest.openapi import openapi_document

access_log = logging.getLogger("geopera.access")
log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 << 20
_REQUEST_ID_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")

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


def error_body(err: DomainError, request_id: str) -> dict[str, Any]:
    details: dict[str, Any] = {"metadata": dict(err.metadata)}
    if err.violations:
        details["field_violations"] = [{"field": v.field, "description": v.description} for v in err.violations]
    if err.expected_schema is not None:
        details["expected_schema"] = err.expected_schema.json_schema
    return {
        "code": err.code.name,
        "reason": err.reason,
        "message": err.message,
        "request_id": request_id,
        "details": details,
    }


def http_status(err: DomainError) -> int:
    if err.code == Code.INVALID_ARGUMENT and err.reason in UNPROCESSABLE_REASONS:
        return 422
    return HTTP_STATUS.get(err.code, 500)


def _analytics_schemas(executor: Executor) -> Callable[[str], dict[str, Any] | None]:
    """The output schema of an analytics method by name (None for an unknown one)."""
    methods = executor.services.analytics.methods

    def lookup(name: str) -> dict[str, Any] | None:
        return _output_schema(methods.get(name).output_model) if name in methods else None

    return lookup


@functools.lru_cache(maxsize=256)
def _output_schema(model: type[BaseModel]) -> dict[str, Any]:
    # Building a pydantic JSON Schema costs ~1 ms; a method's model does not change.
    return model.model_json_schema(mode="serialization")


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id")
    if given and len(given) <= 128 and set(given) <= _REQUEST_ID_OK:
        return given
    return "req_" + secrets.token_hex(8)


def _json_response(body: Any, status: int, request_id: str) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers={"X-Request-Id": request_id},
    )


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Errors outside the operation handlers (unknown route, wrong method, a
    crash) still answer JSON shaped like every other error."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: Code.NOT_FOUND, 405: Code.UNIMPLEMENTED, 413: Code.RESOURCE_EXHAUSTED}.get(
            exc.status, Code.INVALID_ARGUMENT
        )
        err = DomainError(code, "HTTP_" + exc.reason.upper().replace(" ", "_"), exc.reason)
        return _json_response(error_body(err, ""), exc.status, "")
    except Exception as exc:
        request_id = _request_id(request)
        log.exception("unhandled error in %s (request %s)", request.path, request_id)
        err = unexpected_error(exc, request_id)
        return _json_response(error_body(err, request_id), http_status(err), request_id)


class RestApi:
    """Serves as soon as it listens; answers 503 NOT_READY until attached."""

    def __init__(self) -> None:
        self._executor: Executor | None = None

    def attach(self, executor: Executor) -> None:
        self._executor = executor

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])
        app.router.add_post("/v1/op/{operation}", self.execute)
        app.router.add_get("/v1/jobs/{job_id}/events", self.job_events)
        app.router.add_get("/v1/openapi.json", self.openapi)
        return app

    @asynccontextmanager
    async def _call(self, request: web.Request, rpc: str) -> AsyncIterator[CallInfo]:
        call = CallInfo(rpc=rpc, request_id=_request_id(request))
        started = time.perf_counter()
        code = "OK"
        try:
            yield call
        except DomainError as err:
            code = err.code.name
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            access_log.info(
                "call",
                extra={
                    "access": {
                        "rpc": rpc,
                        "operation": call.operation,
                        "principal": call.principal_id,
                        "code": code,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                        "request_id": call.request_id,
                        **call.extra,
                    }
                },
            )

    async def _authenticate(self, request: web.Request, call: CallInfo) -> tuple[Executor, Principal]:
        if self._executor is None:
            raise DomainError(Code.UNAVAILABLE, "NOT_READY", "the server is starting; retry shortly")
        principal = await self._executor.services.tokens.authenticate(request.headers.get("Authorization"))
        call.principal_id = principal.id
        return self._executor, principal

    async def execute(self, request: web.Request) -> web.StreamResponse:
        call_info = CallInfo(rpc="HTTP POST /v1/op", request_id="")
        try:
            async with self._call(request, "HTTP POST /v1/op") as call:
                call_info = call
                call.operation = request.match_info["operation"][:100]
                executor, principal = await self._authenticate(request, call)
                operation = executor.resolve(request.match_info["operation"])
                principal.require_scope(operation.scope)
                params = await self._params(request, operation.params_type())
                result = await executor.run(operation, principal, params, request.headers.get("Idempotency-Key"), call)
                body = jsonview.to_json(result_message(result), analytics_schema=_analytics_schemas(executor))
                return _json_response(body, 200, call.request_id)
        except DomainError as err:
            return _json_response(error_body(err, call_info.request_id), http_status(err), call_info.request_id)
        except Exception as exc:
            log.exception("unhandled error in %s (request %s)", request.path, call_info.request_id)
            error = unexpected_error(exc, call_info.request_id)
            return _json_response(error_body(error, call_info.request_id), http_status(error), call_info.request_id)

    async def _params(self, request: web.Request, message: Message) -> Message:
        try:
            body = await request.json() if request.can_read_body else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise invalid_argument("PARAMS_UNPARSEABLE", f"the body is not JSON: {exc}", field="body") from exc
        except RecursionError as exc:  # ~1000 levels; params are refused past 100 anyway (below)
            raise invalid_argument("PARAMS_UNPARSEABLE", "the body is nested too deeply", field="body") from exc
        if not isinstance(body, dict):
            raise invalid_argument("PARAMS_UNPARSEABLE", "the body must be a JSON object of params", field="body")
        try:
            jsonview.parse_params(body, message)
        except (json_format.ParseError, OverflowError, RecursionError, TypeError, ValueError) as exc:
            # OverflowError: a whole number too large for a double (10**400) in a Struct.
            raise invalid_argument(
                "PARAMS_UNPARSEABLE",
                f"the body is not valid {message.DESCRIPTOR.name}: {exc}"[:500],
                field="body",
            ) from exc
        return message

    async def job_events(self, request: web.Request) -> web.StreamResponse:
        call_info = CallInfo(rpc="HTTP GET /v1/jobs/events", request_id="")
        response: web.StreamResponse | None = None
        try:
            async with self._call(request, "HTTP GET /v1/jobs/events") as call:
                call_info = call
                executor, principal = await self._authenticate(request, call)
                after = self._after_sequence(request)
                with executor.services.streams.hold(principal.id):
                    events = until_revoked(
                        executor.watch(principal, request.match_info["job_id"], after),
                        executor.services.tokens,
                        request.headers.get("Authorization"),
                    )
                    async for event in events:
                        if response is None:
                            response = web.StreamResponse(
                                headers={
                                    "Content-Type": "text/event-stream",
                                    "Cache-Control": "no-cache",
                                    "X-Request-Id": call.request_id,
                                }
                            )
                            await response.prepare(request)
                        payload = kernel_pb2.WatchJobResponse(
                            sequence=event.sequence,
                            event_time=convert.timestamp(event.event_time),
                            job=convert.job(event.job),
                            event_type=event.event_type,
                        )
                        data = json.dumps(jsonview.to_json(payload))
                        await response.write(
                            f"id: {event.sequence}\nevent: {event.event_type}\ndata: {data}\n\n".encode()
                        )
                    if response is None:
                        # A resume of an ended job with nothing newer: 204 also tells an
                        # EventSource not to reconnect.
                        return web.Response(status=204, headers={"X-Request-Id": call.request_id})
                    await response.write_eof()
                    return response
        except DomainError as err:
            if response is None:
                return _json_response(error_body(err, call_info.request_id), http_status(err), call_info.request_id)
            data = json.dumps(error_body(err, call_info.request_id))
            await response.write(f"event: error\ndata: {data}\n\n".encode())
            await response.write_eof()
            return response

    @staticmethod
    def _after_sequence(request: web.Request) -> int:
        raw = request.query.get("after_sequence") or request.headers.get("Last-Event-ID") or "0"
        try:
            return int(raw)
        except ValueError:
            raise invalid_argument(
                "INVALID_SEQUENCE", "after_sequence must be a whole number", field="after_sequence"
            ) from None

    async def openapi(self, request: web.Request) -> web.Response:
        from server.api.operations import REGISTRY

        host = request.headers.get("Host", "")
        return web.json_response(openapi_document(REGISTRY, f"{request.scheme}://{host}" if host else "/"))


async def start_rest(api: RestApi, listen: str, ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(api.application(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port), ssl_context=ssl_context)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    server = site._server  # aiohttp exposes the bound socket only here
    bound = server.sockets[0].getsockname()[1] if isinstance(server, asyncio.Server) and server.sockets else int(port)
    return runner, bound
