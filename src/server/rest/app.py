"""HTTP/JSON projection: `POST /v1/op/{operation}` runs any registered operation
with its params as a JSON body (proto3 JSON mapping, snake_case names, no
`@type`), `GET /v1/jobs/{job_id}/events` streams a job as server-sent events,
and `GET /v1/openapi.json` describes both (`/metrics`, the Prometheus page: rest/metrics.py).
Same auth, validation, idempotency and errors as gRPC: it runs through the same edge
(`geopera_kernel.server.edge`) and the same `Executor`."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel

from geopera.v1 import resources_pb2
from geopera_kernel.server.api import convert, jsonview
from geopera_kernel.server.api.execute import Executor
from geopera_kernel.server.api.registry import OperationRegistry
from geopera_kernel.server.api.wire import result_message
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.jobs import JobEvent, JobLogEvent
from geopera_kernel.server.domain.jobs.watch import LogFollow
from geopera_kernel.server.edge.call import CallInfo, Edge
from geopera_kernel.server.edge.call import request_id as request_id_of
from geopera_kernel.server.edge.revocation import until_revoked
from geopera_kernel.server.edge.status import domain_error_body, unexpected_error
from geopera_kernel.server.errors import Code, DomainError, invalid_argument
from geopera_kernel.server.portal.routes import add_portal_routes
from geopera_kernel.server.rest.access import ResourceAccess
from geopera_kernel.server.rest.docs import add_docs_routes
from geopera_kernel.server.rest.downloads import Downloads
from geopera_kernel.server.rest.edged import add_request_id, through_edge
from geopera_kernel.server.rest.health import add_health_routes
from geopera_kernel.server.rest.job_sets import job_set_of
from geopera_kernel.server.rest.metrics import MetricsPage
from geopera_kernel.server.rest.openapi import openapi_document
from geopera_kernel.server.rest.query_numbers import int64, whole_number
from geopera_kernel.server.rest.responses import error_response, json_response
from geopera_kernel.server.rest.stac import StacApi
from geopera_kernel.server.rest.tiles import TileRoutes

log = logging.getLogger(__name__)

# A job event, or (on a watch with include_logs) a log record.
StreamEvent = TypeVar("StreamEvent", bound=JobEvent | JobLogEvent)

MAX_BODY_BYTES = 16 << 20


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
        return json_response(domain_error_body(err, ""), exc.status, "")
    except Exception as exc:
        request_id = request_id_of(request.headers.get("X-Request-Id"))
        log.exception("unhandled error in %s (request %s)", request.path, request_id)
        return error_response(unexpected_error(exc, request_id), request_id)


# A call's work, given the call and its authenticated caller, and what it
# answers for an error (an error event once a stream has started, say).
CallBody = Callable[[Executor, CallInfo, Principal], Awaitable[web.StreamResponse]]
OnError = Callable[[DomainError, CallInfo], Awaitable[web.StreamResponse]]


def _validate_only(request: web.Request) -> bool:
    """ExecuteRequest.validate_only as the query parameter `validate_only`
    (the body is the params message): true/false, 1/0, or absent."""
    raw = request.query.get("validate_only", "false").lower()
    if raw not in ("true", "1", "false", "0", ""):
        raise invalid_argument("INVALID_VALIDATE_ONLY", "validate_only must be true or false", field="validate_only")
    return raw in ("true", "1")


async def _error_json(err: DomainError, call: CallInfo) -> web.StreamResponse:
    return error_response(err, call.request_id)


class RestApi:
    """Serves as soon as it listens; the edge answers 503 NOT_READY until the
    services are attached."""

    def __init__(
        self, edge: Edge, registry: OperationRegistry, public_url: str = "", metrics_mode: str = "open"
    ) -> None:
        self._edge = edge
        self._registry = registry
        # GEOPERA_PUBLIC_URL when set (behind a proxy): the base of the links the STAC API writes.
        self._public_url = public_url.rstrip("/")
        self._executor: Executor | None = None
        # The check every resource route (downloads, tiles, STAC) runs: bearer or signature.
        self.access = ResourceAccess(edge)
        self.metrics = MetricsPage(edge, metrics_mode)

    def attach(self, executor: Executor) -> None:
        self._executor = executor
        self.access.attach(executor.services)
        self.metrics.attach(executor.services.db)

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])
        app.router.add_post("/v1/op/{operation}", self.execute)
        app.router.add_get("/v1/jobs/{job_id}/events", self.job_events)
        app.router.add_get("/v1/projects/{project_id}/jobs/events", self.project_job_events)
        app.router.add_get("/v1/openapi.json", self.openapi)
        app.on_response_prepare.append(add_request_id)
        Downloads(self.access).add_routes(app)
        add_docs_routes(app.router)
        add_health_routes(app.router, self._edge, lambda: self._executor)
        self.metrics.add_route(app.router)
        StacApi(self.access, self._public_url).add_routes(app.router)
        TileRoutes(self.access).register(app)
        add_portal_routes(app)
        return app

    async def _call(
        self, request: web.Request, rpc: str, body: CallBody, on_error: OnError = _error_json, operation: str = ""
    ) -> web.StreamResponse:
        """Runs `body` through the edge, as the gRPC interceptor runs an RPC:
        request id, admission, authentication, error mapping, the access log."""

        async def work(call: CallInfo) -> web.StreamResponse:
            principal = await self._edge.authenticate(call, request.headers.get("Authorization"))
            assert self._executor is not None  # the edge is ready only once it is attached
            return await body(self._executor, call, principal)

        return await through_edge(self._edge, request, rpc, work, on_error, operation)

    async def execute(self, request: web.Request) -> web.StreamResponse:
        async def run(executor: Executor, call: CallInfo, principal: Principal) -> web.StreamResponse:
            operation = executor.resolve(request.match_info["operation"])
            principal.require_scope(operation.scope)
            params = await self._params(request, operation.params_type())
            key = request.headers.get("Idempotency-Key")
            validate_only = _validate_only(request)
            result = await executor.run(operation, principal, params, key, call, validate_only=validate_only)
            body = jsonview.to_json(result_message(result), analytics_schema=_analytics_schemas(executor))
            return json_response(body, 200, call.request_id)

        operation = request.match_info["operation"][:100]
        return await self._call(request, "HTTP POST /v1/op", run, operation=operation)

    async def _params(self, request: web.Request, message: Message) -> Message:
        try:
            body = await request.json() if request.can_read_body else {}
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, or a number of over 4,300 digits
            raise invalid_argument("PARAMS_UNPARSEABLE", f"the body is not JSON: {exc}"[:300], field="body") from exc
        except RecursionError as exc:  # ~1000 levels; params are refused past 100 anyway (below)
            raise invalid_argument("PARAMS_UNPARSEABLE", "the body is nested too deeply", field="body") from exc
        except web.HTTPRequestEntityTooLarge as exc:  # past the application's client_max_size
            raise invalid_argument(
                "BODY_TOO_LARGE", f"the body is too large ({exc.text})"[:200], field="body"
            ) from None
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
        job_id = request.match_info["job_id"]
        return await self._event_stream(
            request,
            "HTTP GET /v1/jobs/events",
            lambda executor, principal: executor.watch(
                principal, job_id, self._after_sequence(request), _log_follow(request)
            ),
            lambda event: str(event.sequence),
        )

    async def project_job_events(self, request: web.Request) -> web.StreamResponse:
        """WatchJobs as server-sent events; each event's `id` is `job_id:sequence`."""
        return await self._event_stream(
            request,
            "HTTP GET /v1/projects/jobs/events",
            lambda executor, principal: executor.watch_set(principal, job_set_of(request)),
            lambda event: f"{event.job.id}:{event.sequence}",
        )

    async def _event_stream(
        self,
        request: web.Request,
        name: str,
        events_of: Callable[[Executor, Principal], AsyncIterator[StreamEvent]],
        event_id: Callable[[StreamEvent], str],
    ) -> web.StreamResponse:
        response: web.StreamResponse | None = None

        async def stream(executor: Executor, call: CallInfo, principal: Principal) -> web.StreamResponse:
            nonlocal response
            with executor.services.streams.hold(principal.id):
                events = until_revoked(
                    events_of(executor, principal),
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
                    data = json.dumps(jsonview.to_json(convert.watch_response(event)))
                    await response.write(f"id: {event_id(event)}\nevent: {event.event_type}\ndata: {data}\n\n".encode())
                if response is None:
                    # A resume of ended jobs with nothing newer: 204 also tells an
                    # EventSource not to reconnect.
                    return web.Response(status=204, headers={"X-Request-Id": call.request_id})
                await response.write_eof()
                return response

        async def on_error(err: DomainError, call: CallInfo) -> web.StreamResponse:
            if response is None:
                return error_response(err, call.request_id)
            data = json.dumps(domain_error_body(err, call.request_id))
            await response.write(f"event: error\ndata: {data}\n\n".encode())
            await response.write_eof()
            return response

        return await self._call(request, name, stream, on_error)

    @staticmethod
    def _after_sequence(request: web.Request) -> int:
        sequence = int64(request.query.get("after_sequence") or request.headers.get("Last-Event-ID") or "0")
        if sequence is None:
            raise invalid_argument("INVALID_SEQUENCE", "after_sequence must be a whole number", field="after_sequence")
        return sequence

    async def openapi(self, request: web.Request) -> web.Response:
        host = request.headers.get("Host", "")
        return web.json_response(openapi_document(self._registry, f"{request.scheme}://{host}" if host else "/"))


def _log_follow(request: web.Request) -> LogFollow | None:
    """`?include_logs=true` (with `after_log_sequence`, `min_log_level` as a number or a
    LogLevel name: `error`, `LOG_LEVEL_ERROR`) adds the job's log records as `log` events."""
    query = request.query
    if query.get("include_logs", "").lower() not in ("1", "true"):
        return None
    after = int64(query.get("after_log_sequence") or "0")
    if after is None:
        raise invalid_argument(
            "INVALID_SEQUENCE", "after_log_sequence must be a whole number", field="after_log_sequence"
        )
    raw = (query.get("min_log_level") or "0").upper()
    number = whole_number(raw)
    if number is not None:
        if number not in resources_pb2.LogLevel.values():
            raise invalid_argument("INVALID_LOG_LEVEL", f"unknown log level {raw!r}", field="min_log_level")
        level = number
    else:
        name = raw if raw.startswith("LOG_LEVEL_") else f"LOG_LEVEL_{raw}"
        if name not in resources_pb2.LogLevel.keys():
            raise invalid_argument("INVALID_LOG_LEVEL", f"unknown log level {raw!r}", field="min_log_level")
        level = resources_pb2.LogLevel.Value(name)
    return LogFollow(after, level)


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
