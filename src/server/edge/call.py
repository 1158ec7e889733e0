"""One call as the edge sees it, for every projection (gRPC, HTTP): its request
id, admission (refused once the server stops), readiness and authentication,
and what it ends with: the access log line, its metrics (calls, latency) and,
when tracing is configured, its span (a child of the caller's `traceparent`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import trace

from geopera_kernel.raster import tracing
from geopera_kernel.raster.logs import log_access
from geopera_kernel.server import callstats
from geopera_kernel.server.auth import Principal, TokenService
from geopera_kernel.server.errors import Code, DomainError
from geopera_kernel.server.metrics import CallMetrics

_REQUEST_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
_REQUEST_ID_MAX = 128
# Request ids name a call in logs and error reports; they guard nothing, so a
# generator seeded once from the OS does (no getrandom system call per call).
_new_request_bits = random.Random(os.urandom(16)).getrandbits


def request_id(given: str | None) -> str:
    """The caller's `x-request-id` when it is a sane one, else a new id."""
    if given and len(given) <= _REQUEST_ID_MAX and _REQUEST_ID_CHARS.issuperset(given):
        return given
    return f"req_{_new_request_bits(64):016x}"


def metadata_value(context: aio.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value.decode() if isinstance(value, bytes) else value
    return None


@dataclass(slots=True)
class CallInfo:
    """What the access log says about one call; handlers fill in what they learn
    (the operation, `extra` fields). `principal` is set once the call authenticated."""

    rpc: str
    request_id: str
    operation: str = ""
    principal: Principal | None = None
    extra: dict[str, object] = field(default_factory=dict)
    started: float = 0.0
    stats: callstats.CallStats | None = None
    admitted: bool = False
    # The call's span and the context token that made it current (tracing on only).
    span: trace.Span | None = None
    span_token: object = None


_current: ContextVar[CallInfo] = ContextVar("geopera_call")


def current_call() -> CallInfo:
    """The call the running handler serves (set by the edge before the handler runs)."""
    return _current.get()


def current_principal() -> Principal:
    """The authenticated caller of the running handler."""
    principal = _current.get().principal
    assert principal is not None  # the edge authenticates before any handler runs
    return principal


class Edge:
    """Admission, readiness and authentication, and the access log, shared by
    the gRPC interceptor and the HTTP projection. Until `ready` hands over the
    token service (after migrations) calls fail UNAVAILABLE `NOT_READY`; once
    `stopping`, new calls fail UNAVAILABLE `SERVER_SHUTTING_DOWN` (clients retry
    them on another replica or later) while those in flight get the shutdown
    grace to finish."""

    def __init__(self, metrics: CallMetrics | None = None) -> None:
        self.metrics = metrics
        self._tokens: TokenService | None = None
        self.in_flight = 0
        self.stopping = False
        self._idle: asyncio.Event | None = None

    def ready(self, tokens: TokenService) -> None:
        self._tokens = tokens

    @property
    def tokens(self) -> TokenService:
        assert self._tokens is not None  # (asked only of authenticated calls)
        return self._tokens

    def begin(self, rpc: str, given_request_id: str | None, traceparent: str | None = None) -> CallInfo:
        """Opens the call's record (and its cost counters) for the running task;
        with tracing on, also its span, current until `end` (`traceparent`: the
        caller's trace context, from the metadata or header of that name)."""
        call = CallInfo(rpc, request_id(given_request_id), started=time.perf_counter(), stats=callstats.begin())
        _current.set(call)
        if tracing.enabled():
            _start_span(call, traceparent)
        return call

    def admit(self, call: CallInfo) -> None:
        if self.stopping:
            raise DomainError(Code.UNAVAILABLE, "SERVER_SHUTTING_DOWN", "the server is stopping; retry the call")
        self.in_flight += 1
        call.admitted = True

    def authenticate_cached(self, call: CallInfo, authorization: str | None) -> Principal | None:
        """The caller from the token cache, without awaiting; None when `authenticate` must decide."""
        tokens = self._tokens
        principal = tokens.cached(authorization) if tokens is not None else None
        call.principal = principal
        return principal

    async def authenticate(self, call: CallInfo, authorization: str | None) -> Principal:
        tokens = self._tokens
        if tokens is None:
            raise DomainError(Code.UNAVAILABLE, "NOT_READY", "the server is starting; retry shortly")
        principal = await tokens.authenticate(authorization)
        call.principal = principal
        return principal

    def end(self, call: CallInfo, code: str) -> None:
        """The call is over: it leaves the calls in flight and writes its access log line."""
        if call.admitted:
            self.in_flight -= 1
            if self.in_flight == 0 and self._idle is not None:
                self._idle.set()
        principal = call.principal
        seconds = time.perf_counter() - call.started
        entry: dict[str, object] = {
            "rpc": call.rpc,
            "operation": call.operation,
            "principal": principal.id if principal is not None else "",
            "code": code,
            "duration_ms": round(seconds * 1000, 3),
            "request_id": call.request_id,
        }
        if call.stats is not None:
            call.stats.add_log_fields(entry)
        if call.extra:
            entry.update(call.extra)
        if call.span is not None:
            entry["trace_id"] = format(call.span.get_span_context().trace_id, "032x")
            # Span names stay few (an unregistered operation is `other`); the attribute says what was asked.
            _end_span(call, code, self.metrics.label(call.operation) if self.metrics is not None else call.operation)
        log_access(entry)
        if self.metrics is not None:
            self.metrics.record(call.rpc, call.operation, code, seconds)

    async def drain(self, grace: float) -> float:
        """Refuse new calls, wait up to `grace` seconds for those in flight;
        returns the grace left."""
        self.stopping = True
        self._idle = asyncio.Event()
        deadline = time.monotonic() + grace
        if self.in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        return max(0.0, deadline - time.monotonic())


def _start_span(call: CallInfo, traceparent: str | None) -> None:
    span = tracing.tracer().start_span(
        call.rpc, context=tracing.context_of(traceparent), kind=trace.SpanKind.SERVER,
        attributes={"geopera.request_id": call.request_id},
    )  # fmt: skip
    call.span = span
    call.span_token = otel_context.attach(trace.set_span_in_context(span))


def _end_span(call: CallInfo, code: str, operation_label: str) -> None:
    span = call.span
    assert span is not None
    if call.operation:
        span.update_name(f"{call.rpc} {operation_label}")
        span.set_attribute("geopera.operation", call.operation)
    if call.principal is not None:
        span.set_attribute("geopera.principal", call.principal.id)
    span.set_attribute("geopera.code", code)
    if code != "OK":
        span.set_status(trace.StatusCode.ERROR, code)
    span.end()
    call.span = None
    token = call.span_token
    call.span_token = None
    otel_context.detach(token)  # type: ignore[arg-type]
