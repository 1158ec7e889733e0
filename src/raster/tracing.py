"""Traces (OpenTelemetry), shared by the server, the worker and analytics tasks.

Configured once per process from the standard `OTEL_*` variables by
`configure_tracing`: `OTEL_TRACES_EXPORTER` names the exporters (`otlp`: OTLP
over HTTP/protobuf to `OTEL_EXPORTER_OTLP_ENDPOINT` / `..._TRACES_ENDPOINT`;
`console`: one JSON object per span and line on stderr; `none`). Unset means
`none` here (the OpenTelemetry default is `otlp`, but a kernel started without
a collector should not try to reach one): no provider is installed, `enabled`
stays False and the call path makes no span at all (the hot path pays one
boolean test). `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER` and `OTEL_BSP_*` are read by the SDK as documented.

The trace context crosses processes as a W3C `traceparent` string: in the
job assignment (a worker's job span joins the trace of the call that created
the job) and into Dask tasks (`carry_trace`).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

_propagator = TraceContextTextMapPropagator()
_EXPORTERS = ("otlp", "console", "none")

P = ParamSpec("P")
R = TypeVar("R")


class _State:
    enabled = False
    configured = False
    tracer: trace.Tracer = trace.NoOpTracer()


def enabled() -> bool:
    """True once `configure_tracing` installed an exporter: spans are worth making."""
    return _State.enabled


def tracer() -> trace.Tracer:
    return _State.tracer


def _console_line(span: Any) -> str:
    return str(span.to_json(indent=None)) + "\n"


def configure_tracing(service_name: str) -> bool:
    """Installs the tracer provider the `OTEL_*` variables describe; False
    (and nothing installed) when no exporter is configured."""
    _State.configured = True
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",") if n.strip()]
    unknown = [n for n in names if n not in _EXPORTERS]
    if unknown:
        raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {unknown[0]!r} (use otlp, console or none)")
    names = [n for n in names if n != "none"]
    if not names or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter(out=sys.stderr, formatter=_console_line)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _State.tracer = provider.get_tracer("geopera_kernel")
    _State.enabled = True
    return True


def shutdown_tracing() -> None:
    """Flushes the spans still queued (at a clean exit)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if _State.enabled and shutdown is not None:
        shutdown()


def current_traceparent() -> str:
    """The W3C traceparent of the current span; '' when there is none."""
    if not _State.enabled:
        return ""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", "")


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The remote parent a `traceparent` names (None for '' or a malformed one)."""
    if not traceparent:
        return None
    parent = _propagator.extract({"traceparent": traceparent})
    return parent if trace.get_current_span(parent).get_span_context().is_valid else None


def current_trace_id() -> str:
    """The current trace id as 32 hex digits ('' outside a span): what log lines carry."""
    if not _State.enabled:
        return ""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def carry_trace(fn: Callable[P, R], name: str = "") -> Callable[P, R]:
    """`fn` wrapped to run in a span that is a child of the span current *now*
    (where the wrapper is made), wherever it runs: a Dask task, a thread, another
    process (the wrapper pickles when `fn` does). `fn` itself when tracing is off."""
    traceparent = current_traceparent()
    if not traceparent:
        return fn
    return functools.partial(_run_in_trace, fn, traceparent, name or getattr(fn, "__qualname__", "task"))


def _run_in_trace(fn: Callable[..., R], traceparent: str, name: str, *args: Any, **kwargs: Any) -> R:
    if not _State.configured:  # a Dask worker process: its exporter from its own OTEL_* variables
        configure_tracing("geopera-dask-worker")
    with tracer().start_as_current_span(name, context=context_of(traceparent)):
        return fn(*args, **kwargs)
