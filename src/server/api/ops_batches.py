"""Repeating and batching jobs: `processing.jobs.resubmit` and
`processing.create_batch` (unpack, call, pack)."""

from __future__ import annotations

from geopera.v1 import processing_pb2, resources_pb2
from geopera_kernel.server.api import convert
from geopera_kernel.server.api.registry import Operation, OperationContext
from geopera_kernel.server.api.spending import call_commit, spend_result
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.jobs import JobCreate
from geopera_kernel.server.domain.jobs.batches import BatchOutcome
from geopera_kernel.server.errors import DomainError
from geopera_kernel.server.services import Services

_resubmitted = spend_result(processing_pb2.ProcessingJobsResubmitResult)


async def jobs_resubmit(
    s: Services, ctx: OperationContext, p: processing_pb2.ProcessingJobsResubmitParams
) -> processing_pb2.ProcessingJobsResubmitResult:
    params = convert.struct_to_dict(p.input_params)
    commit = call_commit(ctx, _resubmitted)
    spend = await s.jobs.resubmit(ctx.principal, p.job_id, params, commit=commit)
    return _resubmitted(spend)


def _request_error(index: int, error: DomainError | None) -> processing_pb2.BatchRequestError:
    if error is None:
        return processing_pb2.BatchRequestError(index=index)
    return processing_pb2.BatchRequestError(
        index=index,
        code=int(error.code),
        reason=error.reason,
        message=error.message[:1000],
        field=error.violations[0].field if error.violations else "",
    )


def batch_result(outcome: BatchOutcome) -> processing_pb2.ProcessingCreateBatchResult:
    return processing_pb2.ProcessingCreateBatchResult(
        jobs=[convert.job(j) if j is not None else resources_pb2.Job() for j in outcome.jobs],
        errors=[_request_error(i, e) for i, e in enumerate(outcome.errors)],
        batch_id=outcome.batch_id,
        credits_reserved=outcome.credits_reserved,
        created_count=sum(j is not None for j in outcome.jobs),
    )


async def create_batch(
    s: Services, ctx: OperationContext, p: processing_pb2.ProcessingCreateBatchParams
) -> processing_pb2.ProcessingCreateBatchResult:
    specs = [
        JobCreate(
            project_id=p.project_id,
            job_type_id=r.job_type_id,
            input_params=convert.struct_to_dict(r.input_params),
            target_collection_id=r.target_collection_id,
        )
        for r in p.requests
    ]
    outcome = await s.jobs.create_batch(
        ctx.principal,
        p.project_id,
        specs,
        all_or_nothing=p.all_or_nothing,
        dispatch=p.dispatch,
        commit=call_commit(ctx, batch_result),
    )
    return batch_result(outcome)


async def _project_of_job(s: Services, principal: Principal, p: processing_pb2.ProcessingJobsResubmitParams) -> str:
    return (await s.jobs.get(principal, p.job_id)).project_id if p.job_id else ""


async def _project_named(s: Services, principal: Principal, p: processing_pb2.ProcessingCreateBatchParams) -> str:
    return p.project_id


OPERATIONS = (
    Operation.declared(
        processing_pb2.ProcessingJobsResubmitParams,
        processing_pb2.ProcessingJobsResubmitResult,
        jobs_resubmit,
        "Run a finished job again: a new job with its type and input (overrides merged), priced and held anew.",
        key_project=_project_of_job,
        validates_only=True,
    ),
    Operation.declared(
        processing_pb2.ProcessingCreateBatchParams,
        processing_pb2.ProcessingCreateBatchResult,
        create_batch,
        "Create up to 1,000 jobs of a project in one call (optionally all or nothing), sharing a batch id.",
        key_project=_project_named,
        validates_only=True,
    ),
)
