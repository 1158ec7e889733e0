"""Processing, credits-spending and provenance operations: unpack, call, pack."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message

from geopera.v1 import catalog_pb2, processing_pb2, resources_pb2
from geopera_kernel.server.api import convert
from geopera_kernel.server.api.registry import Operation, OperationContext
from geopera_kernel.server.api.spending import call_commit, spend_result
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.clip import ClipRequest, create_clip_job
from geopera_kernel.server.domain.jobs import JobCreate, JobQuery, JobSpend
from geopera_kernel.server.errors import invalid_argument
from geopera_kernel.server.services import Services

CreateParams = processing_pb2.ProcessingCreateParams | processing_pb2.ProcessingCreateAndDispatchParams
R = TypeVar("R", bound=Message)


def _job_create(p: CreateParams) -> JobCreate:
    return JobCreate(
        project_id=p.project_id,
        job_type_id=p.job_type_id,
        input_params=convert.struct_to_dict(p.input_params),
        target_collection_id=p.target_collection_id,
    )


async def clip_create_from_item(
    s: Services, ctx: OperationContext, p: processing_pb2.ClipCreateFromItemParams
) -> processing_pb2.ClipCreateFromItemResult:
    request = ClipRequest(
        source_item_id=p.source_item_id,
        project_id=p.project_id,
        aoi_geometry=convert.struct_to_dict(p.aoi_geometry) if p.HasField("aoi_geometry") else None,
        asset_keys=list(p.asset_keys),
        output_name=p.output_name,
        target_collection_id=p.target_collection_id,
    )

    def result(outcome: tuple[JobSpend, list[str]]) -> processing_pb2.ClipCreateFromItemResult:
        spend, keys = outcome
        message = _clip_spend(spend)
        message.assets_to_clip = len(keys)
        message.asset_keys.extend(keys)
        return message

    outcome = await create_clip_job(ctx.principal, s.catalog, s.jobs, request, commit=call_commit(ctx, result))
    return result(outcome)


_clip_spend = spend_result(processing_pb2.ClipCreateFromItemResult)
_dispatched = spend_result(processing_pb2.ProcessingDispatchResult)


def _creates(
    result_type: type[R], *, dispatch: bool
) -> Callable[[Services, OperationContext, CreateParams], Awaitable[R]]:
    """processing.create and processing.create_and_dispatch: one job, dispatched or not."""
    pack = spend_result(result_type)

    async def create(s: Services, ctx: OperationContext, p: CreateParams) -> R:
        spend = await s.jobs.create(ctx.principal, _job_create(p), dispatch=dispatch, commit=call_commit(ctx, pack))
        return pack(spend)

    return create


processing_create = _creates(processing_pb2.ProcessingCreateResult, dispatch=False)
processing_create_and_dispatch = _creates(processing_pb2.ProcessingCreateAndDispatchResult, dispatch=True)


async def _project_named(s: Services, principal: Principal, p: CreateParams) -> str:
    return p.project_id


async def _project_of_clip(s: Services, principal: Principal, p: processing_pb2.ClipCreateFromItemParams) -> str:
    if p.project_id or not p.source_item_id:
        return p.project_id
    return (await s.catalog.get_item(principal, p.source_item_id)).project_id


async def _project_of_job(s: Services, principal: Principal, p: processing_pb2.ProcessingDispatchParams) -> str:
    return (await s.jobs.get(principal, p.job_id)).project_id if p.job_id else ""


async def processing_dispatch(
    s: Services, ctx: OperationContext, p: processing_pb2.ProcessingDispatchParams
) -> processing_pb2.ProcessingDispatchResult:
    commit = call_commit(ctx, _dispatched)
    spend = await s.jobs.dispatch(ctx.principal, p.job_id, commit=commit)
    return _dispatched(spend)


async def jobs_list(
    s: Services, ctx: OperationContext, p: processing_pb2.ProcessingJobsListParams
) -> processing_pb2.ProcessingJobsListResult:
    if p.status not in convert.JOB_STATUS_NAMES and p.status != resources_pb2.JOB_STATUS_UNSPECIFIED:
        raise invalid_argument("INVALID_STATUS", f"unknown job status {p.status}", field="status")
    query = JobQuery(
        project_id=p.project_id,
        status=convert.JOB_STATUS_NAMES.get(p.status),
        job_type_id=p.job_type_id or None,
        create_start=convert.from_timestamp(
            p.create_time_start, p.HasField("create_time_start"), field="create_time_start"
        ),
        create_end=convert.from_timestamp(p.create_time_end, p.HasField("create_time_end"), field="create_time_end"),
        page_size=p.page_size,
        page_token=p.page_token,
    )
    if p.view not in processing_pb2.JobView.values():
        raise invalid_argument("INVALID_VIEW", f"unknown job view {p.view}", field="view")
    jobs, next_token = await s.jobs.list(ctx.principal, query)
    full = p.view == processing_pb2.JOB_VIEW_FULL
    return processing_pb2.ProcessingJobsListResult(
        jobs=[convert.job(j, full=full) for j in jobs], next_page_token=next_token
    )


async def jobs_get(
    s: Services, ctx: OperationContext, p: processing_pb2.ProcessingJobsGetParams
) -> processing_pb2.ProcessingJobsGetResult:
    return processing_pb2.ProcessingJobsGetResult(job=convert.job(await s.jobs.get(ctx.principal, p.job_id)))


async def jobs_logs(
    s: Services, ctx: OperationContext, p: processing_pb2.ProcessingJobsLogsParams
) -> processing_pb2.ProcessingJobsLogsResult:
    entries, next_token = await s.jobs.logs(ctx.principal, p.job_id, int(p.min_level), p.page_size, p.page_token)
    return processing_pb2.ProcessingJobsLogsResult(
        entries=[convert.job_log_entry(e) for e in entries], next_page_token=next_token
    )


async def jobs_cancel(
    s: Services, ctx: OperationContext, p: processing_pb2.ProcessingJobsCancelParams
) -> processing_pb2.ProcessingJobsCancelResult:
    job = await s.jobs.cancel(ctx.principal, p.job_id, p.reason, validate_only=ctx.validate_only)
    return processing_pb2.ProcessingJobsCancelResult(job=convert.job(job))


async def job_types_list(
    s: Services, ctx: OperationContext, p: processing_pb2.ProcessingJobTypesListParams
) -> processing_pb2.ProcessingJobTypesListResult:
    types = await s.jobs.job_types()
    return processing_pb2.ProcessingJobTypesListResult(job_types=[convert.job_type(t) for t in types])


async def job_types_get(
    s: Services, ctx: OperationContext, p: processing_pb2.ProcessingJobTypesGetParams
) -> processing_pb2.ProcessingJobTypesGetResult:
    return processing_pb2.ProcessingJobTypesGetResult(job_type=convert.job_type(await s.jobs.job_type(p.job_type_id)))


async def workers_list(
    s: Services, ctx: OperationContext, p: processing_pb2.WorkersListParams
) -> processing_pb2.WorkersListResult:
    workers = await s.jobs.workers(p.include_disconnected)
    return processing_pb2.WorkersListResult(workers=[convert.worker(w) for w in workers])


async def items_lineage(
    s: Services, ctx: OperationContext, p: catalog_pb2.ItemsLineageParams
) -> catalog_pb2.ItemsLineageResult:
    nodes, edges = await s.lineage.lineage(ctx.principal, p.item_id, p.direction, p.max_depth)
    return catalog_pb2.ItemsLineageResult(
        nodes=[resources_pb2.LineageNode(kind=k, id=i, label=label) for k, i, label in nodes],
        edges=[
            resources_pb2.LineageEdge(output_item_id=o, relation=r, job_id=j, source_item_id=src)
            for o, r, j, src in edges
        ],
    )


OPERATIONS = (
    Operation.declared(
        processing_pb2.ClipCreateFromItemParams,
        processing_pb2.ClipCreateFromItemResult,
        clip_create_from_item,
        "Clip a source item's rasters to an AOI as a new item (creates and dispatches a clip job).",
        key_project=_project_of_clip,
        validates_only=True,
    ),
    Operation.declared(
        processing_pb2.ProcessingCreateParams,
        processing_pb2.ProcessingCreateResult,
        processing_create,
        "Create a job (credits reserved); dispatch it later.",
        key_project=_project_named,
        validates_only=True,
    ),
    Operation.declared(
        processing_pb2.ProcessingCreateAndDispatchParams,
        processing_pb2.ProcessingCreateAndDispatchResult,
        processing_create_and_dispatch,
        "Create and dispatch a job in one transaction.",
        key_project=_project_named,
        validates_only=True,
    ),
    Operation.declared(
        processing_pb2.ProcessingDispatchParams,
        processing_pb2.ProcessingDispatchResult,
        processing_dispatch,
        "Dispatch a pending job.",
        key_project=_project_of_job,
        validates_only=True,
    ),
    Operation.declared(
        processing_pb2.ProcessingJobsListParams,
        processing_pb2.ProcessingJobsListResult,
        jobs_list,
        "List a project's jobs, newest first.",
    ),
    Operation.declared(
        processing_pb2.ProcessingJobsGetParams,
        processing_pb2.ProcessingJobsGetResult,
        jobs_get,
        "Get a job.",
    ),
    Operation.declared(
        processing_pb2.ProcessingJobsLogsParams,
        processing_pb2.ProcessingJobsLogsResult,
        jobs_logs,
        "Page through a job's log records (written by its worker), oldest first.",
    ),
    Operation.declared(
        processing_pb2.ProcessingJobsCancelParams,
        processing_pb2.ProcessingJobsCancelResult,
        jobs_cancel,
        "Cancel an unfinished job; its credits are released.",
        validates_only=True,
    ),
    Operation.declared(
        processing_pb2.ProcessingJobTypesListParams,
        processing_pb2.ProcessingJobTypesListResult,
        job_types_list,
        "List the job types (built in and declared by workers).",
    ),
    Operation.declared(
        processing_pb2.ProcessingJobTypesGetParams,
        processing_pb2.ProcessingJobTypesGetResult,
        job_types_get,
        "Get a job type with its input schema and cost model.",
    ),
    Operation.declared(
        processing_pb2.WorkersListParams,
        processing_pb2.WorkersListResult,
        workers_list,
        "List registered workers.",
    ),
    Operation.declared(
        catalog_pb2.ItemsLineageParams,
        catalog_pb2.ItemsLineageResult,
        items_lineage,
        "Walk an item's provenance graph.",
    ),
)
