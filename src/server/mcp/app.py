"""The MCP server (official `mcp` SDK, low-level `Server`) over stdio: tools/list
and tools/call answered by the `Projection`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from opentelemetry import trace

from geopera_kernel.raster import tracing
from geopera_kernel.server.api.registry import OperationRegistry
from geopera_kernel.server.mcp.kernel import USER_AGENT, Kernel
from geopera_kernel.server.mcp.scopes import ScopeDiscovery, discover_scopes
from geopera_kernel.server.mcp.tools import Projection, ToolOutcome, ToolSpec

log = logging.getLogger(__name__)

INSTRUCTIONS = """\
Geopera kernel: satellite imagery as a catalogue of items (projects_*, items_*), processing jobs that
create new items and spend credits (clip_create_from_item, processing_*), and analytics over items
(analytics_zonal_stats, analytics_time_series, analytics_change_detection, ... or analytics_execute).
Jobs run asynchronously: a spend tool answers the job at once; follow it with jobs_wait until it is
terminal. To give a person a file (an item's asset, an analytics output), assets_download answers a
signed link they can open without a token. Errors are results with isError set and a JSON body
{code, reason, message, details}; branch on reason, fix the arguments from details.field_violations and
details.expected_schema."""


def _annotations(tool: ToolSpec) -> types.ToolAnnotations:
    if tool.side_effect == "read":
        return types.ToolAnnotations(title=tool.title, read_only_hint=True, open_world_hint=False)
    return types.ToolAnnotations(
        title=tool.title,
        read_only_hint=False,
        # Spends and keyed writes (analytics artifacts) add, they never overwrite.
        destructive_hint=False if tool.idempotency_key else None,
        open_world_hint=False,
    )


def mcp_tool(tool: ToolSpec) -> types.Tool:
    return types.Tool(
        name=tool.name,
        title=tool.title,
        description=tool.description,
        input_schema=tool.input_schema,
        annotations=_annotations(tool),
    )


def mcp_result(outcome: ToolOutcome) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(outcome.body, ensure_ascii=False))],
        structured_content=outcome.body,
        is_error=outcome.is_error,
        _meta=outcome.meta or None,
    )


def build_server(projection: Projection) -> Server[Any]:
    @asynccontextmanager
    async def lifespan(_: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        # Scopes and analytics methods at startup; a kernel that is not up yet
        # is asked again on the next tools/list.
        await projection.load()
        yield {}

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[mcp_tool(tool) for tool in await projection.tools()])

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        async def progress(value: float, message: str) -> None:
            try:
                await ctx.session.report_progress(value, None, message)
            except Exception:  # progress is a courtesy: never fail the call for it
                log.debug("progress notification failed", exc_info=True)

        outcome = await projection.call(params.name, params.arguments, progress)
        if outcome.is_error and tracing.enabled():
            # The mcp SDK's span of this tools/call (a child of the host's `_meta.traceparent`)
            # marks it an error; the reason says which.
            trace.get_current_span().set_attribute("geopera.reason", str(outcome.body.get("reason", "")))
        return mcp_result(outcome)

    return Server(
        "geopera-kernel",
        version=USER_AGENT.split("/", 1)[1],
        title="Geopera kernel",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve_stdio(
    target: str,
    token: str | None,
    registry: OperationRegistry,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    scope_discovery: ScopeDiscovery = discover_scopes,
) -> None:
    kernel = Kernel(target, token, credentials=credentials)
    try:
        server = build_server(Projection(kernel, registry, scope_discovery=scope_discovery))
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    finally:
        await kernel.close()
