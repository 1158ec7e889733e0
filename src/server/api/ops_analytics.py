"""Analytics operations: one `analytics.execute` for every method, and the
method catalogue. Unpack, call, pack."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from geopera.v1 import analytics_pb2, resources_pb2
from geopera_kernel.analytics import MethodRegistry
from geopera_kernel.server.api import convert, jsonview
from geopera_kernel.server.api.registry import Operation, OperationContext
from geopera_kernel.server.api.spending import call_commit
from geopera_kernel.server.domain.analytics import AnalyticsOutcome
from geopera_kernel.server.domain.jobs import JobRecord
from geopera_kernel.server.services import Services


def _operation(description: dict[str, Any]) -> analytics_pb2.AnalyticsOperation:
    return analytics_pb2.AnalyticsOperation(
        name=description["name"],
        description=description["description"],
        input_schema=convert.struct(description["input_schema"]),
        # Results are shaped by this schema on every JSON surface: it carries its key order.
        output_schema=convert.struct(jsonview.with_property_ordering(description["output_schema"])),
        example=convert.struct(description["example"]),
    )


async def analytics_execute(
    s: Services, ctx: OperationContext, p: analytics_pb2.AnalyticsExecuteParams
) -> analytics_pb2.AnalyticsExecuteResult:
    params = convert.struct_to_dict(p.params)
    outcome = await s.analytics.execute(ctx.principal, p.operation, params, commit=call_commit(ctx, _result))
    return _result(outcome)


def _result(outcome: AnalyticsOutcome) -> analytics_pb2.AnalyticsExecuteResult:
    return analytics_pb2.AnalyticsExecuteResult(
        operation=outcome.method,
        result=convert.struct(outcome.result),
        outputs=[
            resources_pb2.Artifact(
                id=a.id, key=a.key, href=f"artifacts/{a.id}", media_type=a.media_type, size_bytes=a.size_bytes,
                sha256=a.sha256, title=a.title,
            )
            for a in outcome.artifacts
        ],
        pixels_to_read=outcome.pixels_to_read,
        exceeds_sync_max_pixels=outcome.exceeds_sync_max_pixels,
        sync_max_pixels=outcome.sync_max_pixels,
    )  # fmt: skip


async def analytics_submit(
    s: Services, ctx: OperationContext, p: analytics_pb2.AnalyticsSubmitParams
) -> analytics_pb2.AnalyticsSubmitResult:
    params = convert.struct_to_dict(p.params)
    job = await s.analytics_jobs.submit(
        ctx.principal, p.project_id, p.operation, params, commit=call_commit(ctx, _submitted)
    )
    return _submitted(job)


def answer_renderer(methods: MethodRegistry) -> Callable[[AnalyticsOutcome], bytes]:
    """How an analytics job's answer is stored (RegisterOutputs): the JSON the HTTP
    projection answers for the synchronous call with that outcome."""

    def render(outcome: AnalyticsOutcome) -> bytes:
        schema = methods.output_schema(outcome.method) if outcome.method in methods else None
        body = jsonview.to_json(_result(outcome), output_schema=schema)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    return render


def _submitted(job: JobRecord) -> analytics_pb2.AnalyticsSubmitResult:
    return analytics_pb2.AnalyticsSubmitResult(job=convert.job(job))


async def operations_list(
    s: Services, ctx: OperationContext, p: analytics_pb2.AnalyticsOperationsListParams
) -> analytics_pb2.AnalyticsOperationsListResult:
    return analytics_pb2.AnalyticsOperationsListResult(operations=[_operation(d) for d in s.analytics.describe_all()])


async def operations_get(
    s: Services, ctx: OperationContext, p: analytics_pb2.AnalyticsOperationsGetParams
) -> analytics_pb2.AnalyticsOperationsGetResult:
    return analytics_pb2.AnalyticsOperationsGetResult(operation=_operation(s.analytics.describe(p.name)))


OPERATIONS = (
    Operation.declared(
        analytics_pb2.AnalyticsExecuteParams,
        analytics_pb2.AnalyticsExecuteResult,
        analytics_execute,
        "Run an analytics method (zonal_stats, time_series, change_detection, ...) over items.",
        claims_key=True,
        validates_only=True,
    ),
    Operation.declared(
        analytics_pb2.AnalyticsSubmitParams,
        analytics_pb2.AnalyticsSubmitResult,
        analytics_submit,
        "Run an analytics method as a job (no synchronous pixel limit); its result becomes the job's artifacts.",
        claims_key=True,
        validates_only=True,
    ),
    Operation.declared(
        analytics_pb2.AnalyticsOperationsListParams,
        analytics_pb2.AnalyticsOperationsListResult,
        operations_list,
        "List the analytics methods with their input and output JSON Schemas.",
    ),
    Operation.declared(
        analytics_pb2.AnalyticsOperationsGetParams,
        analytics_pb2.AnalyticsOperationsGetResult,
        operations_get,
        "Describe one analytics method.",
    ),
)
