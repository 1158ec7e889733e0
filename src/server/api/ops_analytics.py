"""Analytics operations: one `analytics.execute` for every method, and the
method catalogue. Unpack, call, pack."""

from __future__ import annotations

from typing import Any

from geopera.v1 import analytics_pb2, resources_pb2
from server.api import convert
from server.api.registry import Operation, OperationContext
from server.services import Services


def _operation(description: dict[str, Any]) -> analytics_pb2.AnalyticsOperation:
    return analytics_pb2.AnalyticsOperation(
        name=description["name"],
        description=description["description"],
        input_schema=convert.struct(description["input_schema"]),
        output_schema=convert.struct(description["output_schema"]),
        example=convert.struct(description["example"]),
    )


async def analytics_execute(
    s: Services, ctx: OperationContext, p: analytics_pb2.AnalyticsExecuteParams
) -> analytics_pb2.AnalyticsExecuteResult:
    outcome = await s.analytics.execute(ctx.principal, p.operation, convert.struct_to_dict(p.params))
    return analytics_pb2.AnalyticsExecuteResult(
        operation=outcome.operation,
        result=convert.struct(outcome.result),
        outputs=[
            resources_pb2.Artifact(
                id=a.id, key=a.key, href=f"artifacts/{a.id}", media_type=a.media_type, size_bytes=a.size_bytes,
                sha256=a.sha256, title=a.title,
            )
            for a in outcome.artifacts
        ],
    )  # fmt: skip


async def operations_list(
    s: Services, ctx: OperationContext, p: analytics_pb2.AnalyticsOperationsListParams
) -> analytics_pb2.AnalyticsOperationsListResult:
    return analytics_pb2.AnalyticsOperationsListResult(operations=[_operation(d) for d in s.analytics.describe_all()])


async def operations_get(
    s: Services, ctx: OperationContext, p: analytics_pb2.AnalyticsOperationsGetParams
) -> analytics_pb2.AnalyticsOperationsGetResult:
    return analytics_pb2.AnalyticsOperationsGetResult(operation=_operation(s.analytics.describe(p.name)))


OPERATIONS = (
    Operation(
        "analytics.execute", analytics_pb2.AnalyticsExecuteParams, analytics_pb2.AnalyticsExecuteResult,
        "analytics:read", "read", analytics_execute,
        "Run an analytics method (zonal_stats, time_series, change_detection, ...) over items.",
    ),
    Operation(
        "analytics.operations.list", analytics_pb2.AnalyticsOperationsListParams,
        analytics_pb2.AnalyticsOperationsListResult, "analytics:read", "read", operations_list,
        "List the analytics methods with their input and output JSON Schemas.",
    ),
    Operation(
        "analytics.operations.get", analytics_pb2.AnalyticsOperationsGetParams,
        analytics_pb2.AnalyticsOperationsGetResult, "analytics:read", "read", operations_get,
        "Describe one analytics method.",
    ),
)  # fmt: skip
