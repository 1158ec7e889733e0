"""The MCP tool catalogue, projected from the operation registry, and tool
calls run against the kernel. Nothing here knows MCP's wire types (see
`geopera_kernel.server.mcp.app`), so it is the same projection whatever the transport.
(Just over 400 lines: the catalogue and the calls share its schemas and argument checks.)

- One tool per registered operation, named without dots (`items.list` ->
  `items_list`); its input schema is the params message's JSON Schema (proto3
  JSON, snake_case); tools of operations that honour `idempotency-key`
  (spends, analytics.execute) take an extra optional `idempotency_key`.
- One tool per analytics method (`analytics_zonal_stats`, ...), listed by
  `analytics.operations.list`, whose input schema is the method's own.
- Tools of writes and spends take an extra optional `validate_only`
  (ExecuteRequest.validate_only: check everything, change nothing; a spend
  answers its cost estimate).
- `jobs_wait`: follows `KernelService/WatchJob` for a bounded time.
- `assets_download`: a signed download link (`assets.sign`) for a person, not
  bytes (see `geopera_kernel.server.mcp.download`).

A result is the operation's result message as proto3 JSON; an error is the
body the HTTP projection answers (`{code, reason, message, request_id,
details}`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema
from google.protobuf import json_format

from geopera.v1 import analytics_pb2, resources_pb2
from geopera_kernel.server.api import jsonview
from geopera_kernel.server.api.registry import Operation, OperationRegistry, SideEffect
from geopera_kernel.server.api.wire import descriptor_of
from geopera_kernel.server.mcp import download
from geopera_kernel.server.mcp.kernel import Kernel, KernelError
from geopera_kernel.server.mcp.schema import message_schema
from geopera_kernel.server.mcp.scopes import ScopeDiscovery, allows, discover_scopes

log = logging.getLogger(__name__)

IDEMPOTENCY_ARGUMENT = "idempotency_key"
VALIDATE_ONLY_ARGUMENT = "validate_only"
IDEMPOTENCY_META_KEY = "io.geopera/idempotency_key"
ANALYTICS_EXECUTE = "analytics.execute"
ANALYTICS_LIST = "analytics.operations.list"
JOBS_WAIT = "jobs_wait"
WAIT_DEFAULT_SECONDS = 30.0
WAIT_MAX_SECONDS = 50.0
# Even with timeout_seconds=0, wait this long for the job's first snapshot.
FIRST_EVENT_SECONDS = 5.0
RELOAD_SECONDS = 10.0
_TRANSIENT = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
_TERMINAL = frozenset(
    {resources_pb2.JOB_STATUS_SUCCEEDED, resources_pb2.JOB_STATUS_FAILED, resources_pb2.JOB_STATUS_CANCELLED}
)

ToolKind = Literal["operation", "analytics_method", "jobs_wait", "assets_download"]
# progress(progress, message): progress increases with every call.
Progress = Callable[[float, str], Awaitable[None]]


def tool_name(operation: str) -> str:
    """`processing.jobs.list` -> `processing_jobs_list`."""
    return operation.replace(".", "_")


@dataclass(frozen=True)
class ToolSpec:
    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    scope: str
    side_effect: SideEffect
    kind: ToolKind
    operation: Operation | None = None
    analytics_method: str = ""

    @property
    def idempotency_key(self) -> bool:
        """Takes `idempotency_key` (and gets a fresh one without it)."""
        return self.operation is not None and self.operation.idempotency_key

    @property
    def validate_only(self) -> bool:
        """Takes `validate_only` (writes and spends: reads change nothing anyway)."""
        return _takes_validate_only(self.operation)


def _takes_validate_only(operation: Operation | None) -> bool:
    return operation is not None and operation.side_effect != "read" and operation.supports_validate_only


@dataclass
class ToolOutcome:
    """A tool's answer: `body` is the result (or the error) as a JSON object."""

    body: dict[str, Any]
    is_error: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


def _access(operation: Operation) -> str:
    text = f"Scope `{operation.scope}`; side effect: {operation.side_effect}."
    if operation.idempotency_key:
        effect = "spending" if operation.side_effect == "spend" else "storing anything"
        text += (
            (" Spends credits." if operation.side_effect == "spend" else " May store artifacts.")
            + f" Pass `{IDEMPOTENCY_ARGUMENT}` (1-255 printable ASCII characters) to make a"
            f" retry safe: the same key with the same arguments returns the first result instead of {effect}"
            " again, the same key with other arguments is refused (IDEMPOTENCY_KEY_REUSED). Without one,"
            " each call gets a fresh key."
        )
    return text


def _with_validate_only_argument(schema: dict[str, Any], operation: Operation) -> dict[str, Any]:
    if _takes_validate_only(operation):
        answer = "its cost estimate" if operation.side_effect == "spend" else "what it would do"
        schema.setdefault("properties", {})[VALIDATE_ONLY_ARGUMENT] = {
            "type": "boolean",
            "default": False,
            "description": f"Optional; true checks everything and changes nothing, answering {answer}.",
        }
    return schema


def _with_key_argument(schema: dict[str, Any]) -> dict[str, Any]:
    schema.setdefault("properties", {})[IDEMPOTENCY_ARGUMENT] = {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "description": "Optional; sent as the `idempotency-key` metadata (see the tool description).",
    }
    return schema


def operation_tool(operation: Operation) -> ToolSpec:
    schema = message_schema(descriptor_of(operation.params_type))
    if operation.idempotency_key:
        schema = _with_key_argument(schema)
    schema = _with_validate_only_argument(schema, operation)
    return ToolSpec(
        name=tool_name(operation.name),
        title=operation.name,
        description=f"{operation.description}\n\nOperation `{operation.name}`. " + _access(operation),
        input_schema=schema,
        scope=operation.scope,
        side_effect=operation.side_effect,
        kind="operation",
        operation=operation,
    )


def analytics_tool(method: analytics_pb2.AnalyticsOperation, execute: Operation) -> ToolSpec:
    schema = json_format.MessageToDict(method.input_schema)
    if schema.get("type") != "object":
        schema = {"type": "object", "properties": {}, **{k: v for k, v in schema.items() if k != "type"}}
    if execute.idempotency_key:
        schema = _with_key_argument(schema)
    schema = _with_validate_only_argument(schema, execute)
    description = (method.description or f"The analytics method {method.name}.").strip()
    return ToolSpec(
        name="analytics_" + re.sub(r"[^A-Za-z0-9_-]", "_", method.name),
        title=f"analytics {method.name}",
        description=f"{description}\n\nRuns `{execute.name}` with operation `{method.name}`; the arguments are"
        " the method's params and the result is that of analytics_execute. " + _access(execute),
        input_schema=schema,
        scope=execute.scope,
        side_effect=execute.side_effect,
        kind="analytics_method",
        operation=execute,
        analytics_method=method.name,
    )


def jobs_wait_tool() -> ToolSpec:
    return ToolSpec(
        name=JOBS_WAIT,
        title="wait for a job",
        description=(
            "Follow a job (KernelService/WatchJob) until it ends (`succeeded`, `failed` or `cancelled`) or"
            f" `timeout_seconds` pass (default {WAIT_DEFAULT_SECONDS:g}, at most {WAIT_MAX_SECONDS:g}). Answers"
            " the latest job snapshot, its status, whether it is terminal and the last event sequence; call it"
            " again to keep waiting. Reports progress notifications when the client asks for them.\n\n"
            + "Scope `processing:read`; side effect: read."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "job_id": {"type": "string", "minLength": 1, "description": "The job, `job_...`."},
                "timeout_seconds": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": WAIT_MAX_SECONDS,
                    "default": WAIT_DEFAULT_SECONDS,
                    "description": "How long to wait for the job to end.",
                },
            },
            "required": ["job_id"],
            "additionalProperties": False,
        },
        scope="processing:read",
        side_effect="read",
        kind="jobs_wait",
    )


def assets_download_tool() -> ToolSpec:
    return ToolSpec(
        name=download.ASSETS_DOWNLOAD,
        title="download link",
        description=download.DESCRIPTION,
        input_schema=download.INPUT_SCHEMA,
        scope="catalog:read",
        side_effect="read",
        kind="assets_download",
    )


def _invalid(reason: str, message: str, violations: list[dict[str, str]], schema: dict[str, Any]) -> KernelError:
    violations = violations or [{"field": "arguments", "description": message}]
    return KernelError("INVALID_ARGUMENT", reason, message, field_violations=violations, expected_schema=schema)


def _to_dict(message: Any, analytics_schema: Callable[[str], dict[str, Any] | None] | None = None) -> dict[str, Any]:
    return jsonview.to_json(message, analytics_schema=analytics_schema)


class Projection:
    """The tools of one kernel as one principal sees them."""

    def __init__(
        self,
        kernel: Kernel,
        registry: OperationRegistry,
        *,
        scope_discovery: ScopeDiscovery = discover_scopes,
    ) -> None:
        self.kernel = kernel
        self.registry = registry
        self._scope_discovery = scope_discovery
        self._lock = asyncio.Lock()
        self._loaded = False
        self._retry_load_at = 0.0
        self.scopes: frozenset[str] | None = None  # None: unknown, every tool is listed
        self._static = [operation_tool(op) for op in registry] + [jobs_wait_tool()]
        if registry.get(download.SIGN_OPERATION) is not None:
            self._static.append(assets_download_tool())
        self._analytics: list[ToolSpec] = []
        # Output schemas by method name: results come back in their types and key order.
        self._output_schemas: dict[str, dict[str, Any]] = {}

    async def load(self) -> None:
        """Learn the caller's scopes and the analytics methods: once, and again
        (at most every `RELOAD_SECONDS`) while the kernel could not be reached."""
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if self._loaded or now < self._retry_load_at:
                return
            transient = False
            self.scopes = await self._scope_discovery(self.kernel, self.registry)
            execute, listing = self.registry.get(ANALYTICS_EXECUTE), self.registry.get(ANALYTICS_LIST)
            if execute is not None and listing is not None and allows(self.scopes, listing.scope):
                try:
                    result = await self.kernel.execute(listing, listing.params_type(), time_budget=15, retry=False)
                except KernelError as err:
                    log.warning("cannot list the analytics methods: %s", err)
                    transient = err.code in _TRANSIENT
                else:
                    taken = {tool.name for tool in self._static}
                    methods = []
                    assert isinstance(result, analytics_pb2.AnalyticsOperationsListResult)  # the registry's
                    self._output_schemas = {
                        method.name: json_format.MessageToDict(method.output_schema) for method in result.operations
                    }
                    for method in result.operations:
                        tool = analytics_tool(method, execute)
                        if tool.name in taken:
                            log.warning("analytics method %s: tool name %s is taken", method.name, tool.name)
                            continue
                        taken.add(tool.name)
                        methods.append(tool)
                    self._analytics = methods
            self._loaded = not transient
            self._retry_load_at = now + RELOAD_SECONDS

    def all_tools(self) -> list[ToolSpec]:
        return [*self._static, *self._analytics]

    async def tools(self) -> list[ToolSpec]:
        """The tools the caller's scopes allow."""
        await self.load()
        return [tool for tool in self.all_tools() if allows(self.scopes, tool.scope)]

    async def call(
        self, name: str, arguments: Mapping[str, Any] | None, progress: Progress | None = None
    ) -> ToolOutcome:
        """Run a tool. A tool the listing hides still runs: the kernel decides."""
        await self.load()
        tools = {tool.name: tool for tool in self.all_tools()}
        spec = tools.get(name)
        args = dict(arguments or {})
        meta: dict[str, Any] = {}
        try:
            if spec is None:
                raise KernelError(
                    "INVALID_ARGUMENT", "UNKNOWN_TOOL", f"unknown tool {name[:100]!r}",
                    metadata={"known_tools": ", ".join(sorted(tools))},
                )  # fmt: skip
            if spec.kind == "jobs_wait":
                return ToolOutcome(await self._wait(spec, args, progress))
            if spec.kind == "assets_download":
                return ToolOutcome(await download.download_link(self.kernel, self.registry, args))
            validate_only = args.pop(VALIDATE_ONLY_ARGUMENT, False) if spec.validate_only else False
            if not isinstance(validate_only, bool):
                message = f"{VALIDATE_ONLY_ARGUMENT} must be true or false"
                raise _invalid(
                    "INVALID_VALIDATE_ONLY", message, [{"field": VALIDATE_ONLY_ARGUMENT, "description": message}],
                    spec.input_schema,
                )  # fmt: skip
            if spec.idempotency_key:
                key = args.pop(IDEMPOTENCY_ARGUMENT, None)
                if key is not None and not isinstance(key, str):
                    message = f"{IDEMPOTENCY_ARGUMENT} must be a string"
                    raise _invalid(
                        "INVALID_IDEMPOTENCY_KEY", message, [{"field": IDEMPOTENCY_ARGUMENT, "description": message}],
                        spec.input_schema,
                    )  # fmt: skip
                if not validate_only:  # a validate-only call records nothing under a key
                    meta[IDEMPOTENCY_META_KEY] = key if key is not None else "mcp-" + uuid.uuid4().hex
            assert spec.operation is not None
            params = self._params(spec, args)
            result = await self.kernel.execute(
                spec.operation, params, idempotency_key=meta.get(IDEMPOTENCY_META_KEY), validate_only=validate_only
            )
            return ToolOutcome(_to_dict(result, self._output_schemas.get), meta=meta)
        except KernelError as err:
            error = err
        except Exception:
            log.exception("tool %s failed", name)
            error = KernelError("INTERNAL", "INTERNAL", f"the MCP server failed to run tool {name[:100]!r}")
        body = error.body()
        if IDEMPOTENCY_META_KEY in meta:
            body[IDEMPOTENCY_ARGUMENT] = meta[IDEMPOTENCY_META_KEY]  # retry with it to be safe
        return ToolOutcome(body, is_error=True, meta=meta)

    @staticmethod
    def _params(spec: ToolSpec, args: dict[str, Any]) -> Any:
        assert spec.operation is not None
        try:
            if spec.kind == "analytics_method":
                params = analytics_pb2.AnalyticsExecuteParams(operation=spec.analytics_method)
                params.params.update(args)
                return params
            return jsonview.parse_params(args, spec.operation.params_type())
        except (json_format.ParseError, OverflowError, RecursionError, TypeError, ValueError) as exc:
            descriptor = spec.operation.params_type.DESCRIPTOR
            # protobuf's text lists the camelCase JSON names: name the snake_case ones the schema uses.
            problem = str(exc).split("\n", 1)[0]
            if "has no field named" in problem:
                problem += "; its fields: " + ", ".join(f.name for f in descriptor.fields)
            message = f"the arguments are not valid {descriptor.name}: {problem}"[:500]
            raise _invalid("PARAMS_UNPARSEABLE", message, [], spec.input_schema) from exc

    async def _wait(self, spec: ToolSpec, args: dict[str, Any], progress: Progress | None) -> dict[str, Any]:
        violations = [
            {"field": ".".join(map(str, e.absolute_path)) or "arguments", "description": e.message}
            for e in jsonschema.Draft202012Validator(spec.input_schema).iter_errors(args)
        ]
        if violations:
            raise _invalid("INVALID_TOOL_ARGUMENTS", "; ".join(v["description"] for v in violations)[:500],
                           violations, spec.input_schema)  # fmt: skip
        job_id: str = args["job_id"]
        timeout = float(args.get("timeout_seconds", WAIT_DEFAULT_SECONDS))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        latest: resources_pb2.Job | None = None
        sequence = 0
        events = self.kernel.watch(job_id)
        try:
            while latest is None or latest.status not in _TERMINAL:
                remaining = deadline - loop.time()
                if latest is not None and remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(
                        anext(events), remaining if latest is not None else max(remaining, FIRST_EVENT_SECONDS)
                    )
                except (StopAsyncIteration, TimeoutError):
                    break
                except KernelError:
                    if latest is None:
                        raise
                    break  # e.g. the server is stopping: answer what we have; the caller waits again
                latest, sequence = event.job, event.sequence
                if progress is not None:
                    status = jsonview.job_status_word(latest.status)
                    await progress(float(sequence), f"{status} {latest.progress:.0%} {latest.message}".strip())
        finally:
            await events.aclose()
        if latest is None:
            raise KernelError("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", f"no snapshot of job {job_id} in time")
        return {
            "job": _to_dict(latest),
            "status": jsonview.job_status_word(latest.status),
            "terminal": latest.status in _TERMINAL,
            "last_sequence": sequence,
        }
