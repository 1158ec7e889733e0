"""Traces through the real exporters: a server and a worker started with
`OTEL_TRACES_EXPORTER=console` write one JSON span per line, read back here.
The call that creates a job, the worker's job span and the worker's calls back
share the caller's trace id, and log lines carry it. Without OTEL_* nothing is
traced (the other tests run so)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from geopera.v1 import catalog_pb2
from geopera_kernel.raster import tracing
from tests.jobs_support import STATUS, create_and_dispatch, running_world, wait_terminal
from tests.support.client import RpcFailure

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


def spans_in(path: Path) -> list[dict[str, Any]]:
    """The console exporter's lines (one JSON span each) among the log lines."""
    found = []
    for line in path.read_text().splitlines():
        if line.startswith("{") and '"context"' in line and '"trace_id"' in line:
            span = json.loads(line)
            if "context" in span:
                found.append(span)
    return found


def wait_for_span(paths: list[Path], name: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for path in paths:
            for span in spans_in(path):
                if span["name"] == name:
                    return span
        assert time.monotonic() < deadline, f"no span {name!r} exported"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def traced_world(database_factory, tmp_path_factory):
    # The server and the worker processes inherit the environment.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_TRACES_EXPORTER", "console")
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export within 0.1 s (default 5 s)
        with running_world(database_factory.create(), tmp_path_factory.mktemp("traces"), workers=1) as world:
            yield world


def test_a_workers_job_span_joins_the_trace_of_the_call_that_created_the_job(traced_world):
    world = traced_world
    client = world.client("alpha")
    traceparent = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
    job = create_and_dispatch(client, "test_cog", {"name": "traced", "steps": 1}, traceparent=traceparent).job
    assert wait_terminal(client, job.id).status == STATUS.JOB_STATUS_SUCCEEDED
    server_log = world.server.log_path
    worker_logs = sorted(world.home.glob("worker-*.log"))

    created = wait_for_span([server_log], "Execute processing.create_and_dispatch")
    assert created["context"]["trace_id"] == "0x" + TRACE_ID
    assert created["parent_id"] == "0x" + PARENT_SPAN  # the caller's span
    assert created["kind"] == "SpanKind.SERVER"
    assert created["attributes"]["geopera.code"] == "OK"
    assert created["resource"]["attributes"]["service.name"] == "geopera-server"

    ran = wait_for_span(worker_logs, "job test_cog")
    assert ran["context"]["trace_id"] == "0x" + TRACE_ID
    assert ran["parent_id"] == created["context"]["span_id"]
    assert ran["attributes"]["geopera.job_id"] == job.id
    assert ran["resource"]["attributes"]["service.name"] == "geopera-worker"

    # The worker's calls back for the job carry the trace: the server's span of its RegisterOutputs.
    registered = wait_for_span([server_log], "RegisterOutputs")
    assert registered["context"]["trace_id"] == "0x" + TRACE_ID
    assert registered["parent_id"] == ran["context"]["span_id"]

    # Log lines carry the trace id: the call's access line, the worker's job lines.
    access = [json.loads(line) for line in server_log.read_text().splitlines() if '"rpc":"Execute"' in line]
    assert any(line.get("trace_id") == TRACE_ID and line["operation"] == "processing.create_and_dispatch"
               for line in access)  # fmt: skip
    worker_lines = [
        json.loads(line) for path in worker_logs for line in path.read_text().splitlines() if '"level"' in line
    ]
    assert any(line.get("trace_id") == TRACE_ID and job.id in line.get("msg", "") for line in worker_lines)


def test_a_call_without_traceparent_starts_its_own_trace_and_errors_mark_the_span(traced_world):
    client = traced_world.client("alpha")
    with pytest.raises(RpcFailure):
        client.execute("items.get", catalog_pb2.ItemsGetParams(item_id="itm_missing"))
    span = wait_for_span([traced_world.server.log_path], "Execute items.get")
    assert span["parent_id"] is None and span["context"]["trace_id"] != "0x" + TRACE_ID
    assert span["status"]["status_code"] == "ERROR" and span["attributes"]["geopera.code"] == "NOT_FOUND"
    with pytest.raises(RpcFailure):  # a made-up operation: one span name for all of them
        client.execute("zz.made_up_name", catalog_pb2.ItemsGetParams())
    made_up = wait_for_span([traced_world.server.log_path], "Execute other")
    assert made_up["attributes"]["geopera.operation"] == "zz.made_up_name"


HOSTILE_TRACEPARENTS = [
    "", " ", "x" * 4000, "00-zz-zz-zz", f"00-{'0' * 32}-{'0' * 16}-01", f"ff-{TRACE_ID}-{PARENT_SPAN}-01",
    f"00-{TRACE_ID}-{PARENT_SPAN}-01-extra", "99999999999999999999", "~!@#$%^&*()",
]  # fmt: skip


@pytest.mark.parametrize("traceparent", HOSTILE_TRACEPARENTS)
def test_a_malformed_trace_context_is_ignored_not_an_error(traced_world, traceparent):
    """gRPC metadata and an HTTP header: the call runs (a trace of its own), whatever the context says."""
    item_id = next(iter(traced_world.items.values()))
    client = traced_world.client("alpha")
    assert client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=item_id), traceparent=traceparent,
                          tracestate=traceparent).item.id == item_id  # fmt: skip
    request = urllib.request.Request(
        traced_world.server.http_url + "/v1/op/items.get",
        data=json.dumps({"item_id": item_id}).encode(),
        headers={"Authorization": f"Bearer {traced_world.tokens['alpha']}", "Content-Type": "application/json",
                 "traceparent": traceparent, "tracestate": traceparent},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def test_an_http_call_joins_the_trace_its_traceparent_header_names(traced_world):
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    request = urllib.request.Request(
        traced_world.server.http_url + "/v1/op/items.get",
        data=json.dumps({"item_id": next(iter(traced_world.items.values()))}).encode(),
        headers={"Authorization": f"Bearer {traced_world.tokens['alpha']}", "Content-Type": "application/json",
                 "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    span = _span(traced_world.server.log_path, "HTTP POST /v1/op items.get", trace_id)
    assert span["parent_id"] == "0xb7ad6b7169203331"


def _span(path: Path, name: str, trace_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for span in spans_in(path):
            if span["name"] == name and span["context"]["trace_id"] == "0x" + trace_id:
                return span
        assert time.monotonic() < deadline, f"no span {name!r} in trace {trace_id} exported to {path.name}"
        time.sleep(0.2)


def test_an_mcp_tool_call_joins_the_hosts_trace_and_carries_it_to_the_kernel(traced_world):
    """`geopera mcp` with OTEL_*: the mcp SDK's span per tools/call, a child of the `_meta.traceparent` the
    host sent, and the kernel's span of the call the tool makes is its child; a refused call marks it."""
    from tests.support.mcp_client import McpClient

    log_path = traced_world.home / "mcp-traced.log"
    otel = {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    mcp = McpClient(traced_world.server.address, traced_world.tokens["alpha"], log_path, env=otel)
    try:
        trace_id, host_span = "5a1f0c4e2b9d8e7f6a5b4c3d2e1f0a9b", "a1b2c3d4e5f60718"
        item_id = next(iter(traced_world.items.values()))
        result = mcp.call("items_get", {"item_id": item_id}, meta={"traceparent": f"00-{trace_id}-{host_span}-01"})
        assert not result.is_error, result.structured_content
        tool = _span(log_path, "tools/call items_get", trace_id)
        assert tool["parent_id"] == "0x" + host_span and tool["kind"] == "SpanKind.SERVER"
        assert tool["attributes"]["gen_ai.tool.name"] == "items_get"  # the mcp SDK's span
        assert tool["resource"]["attributes"]["service.name"] == "geopera-mcp"
        kernel = _span(traced_world.server.log_path, "Execute items.get", trace_id)
        assert kernel["parent_id"] == tool["context"]["span_id"]

        refused_trace = "6b2f1d5e3c0e9f8a7b6c5d4e3f2a1b0c"
        refused = mcp.call(
            "items_get", {"item_id": "itm_missing"}, meta={"traceparent": f"00-{refused_trace}-{host_span}-01"}
        )
        assert refused.is_error
        failed = _span(log_path, "tools/call items_get", refused_trace)
        assert failed["status"]["status_code"] == "ERROR" and failed["attributes"]["geopera.reason"] == "ITEM_NOT_FOUND"
    finally:
        mcp.close()


def test_carry_trace_runs_a_task_in_a_child_of_the_span_current_where_it_was_made():
    """What a Dask task gets: the wrapper made under a span runs `fn` in a child span
    wherever it runs (here another thread and a pickle round trip); without tracing, `fn` itself."""
    import pickle
    import threading

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    assert tracing.carry_trace(len) is len  # tracing off in this process: nothing wrapped

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = (tracing._State.enabled, tracing._State.configured, tracing._State.tracer)
    tracing._State.enabled, tracing._State.configured = True, True
    tracing._State.tracer = provider.get_tracer("test")
    try:
        with tracing.tracer().start_as_current_span("call") as call:
            task = pickle.loads(pickle.dumps(tracing.carry_trace(sum, "window")))
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(task([1, 2, 3])))
        thread.start()
        thread.join()
        assert seen == [6]
        (window,) = [s for s in exporter.get_finished_spans() if s.name == "window"]
        assert window.context.trace_id == call.get_span_context().trace_id
        assert window.parent is not None and window.parent.span_id == call.get_span_context().span_id
        assert trace.get_current_span() is trace.INVALID_SPAN
    finally:
        tracing._State.enabled, tracing._State.configured, tracing._State.tracer = saved


def test_an_unknown_exporter_stops_the_server_and_the_worker_at_once(tmp_path):
    import subprocess
    import sys

    from tests.support.server import REPO

    env = {"OTEL_TRACES_EXPORTER": "zipkin", "GEOPERA_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for command, status in ((["geopera_kernel.server.cli", "serve"], 1), (["geopera_kernel.worker.main"], 2)):
        done = subprocess.run(
            [sys.executable, "-m", *command], cwd=REPO, env={**env, "GEOPERA_WORKER_TOKEN": "x"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == status, done.stderr
        assert "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin' (use otlp, console or none)" in done.stderr
