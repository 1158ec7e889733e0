"""Resubmitting jobs, job batches and WatchJobs, end to end: real PostgreSQL,
a real server and real worker processes running the test job types."""

from __future__ import annotations

import secrets
from typing import Any

import grpc
import pytest

from geopera.v1 import kernel_pb2, processing_pb2
from tests.jobs_support import STATUS, balance, ledger, running_world, struct, wait_terminal
from tests.support.client import RpcFailure

TERMINAL = (STATUS.JOB_STATUS_SUCCEEDED, STATUS.JOB_STATUS_FAILED, STATUS.JOB_STATUS_CANCELLED)


@pytest.fixture(scope="module")
def batch_world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("batches"), workers=2, capacity=4) as world:
        yield world


def _fails(call) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        call()
    assert info.value.code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), info.value
    return info.value


def _request(job_type_id: str, params: dict[str, Any]) -> processing_pb2.BatchJobRequest:
    return processing_pb2.BatchJobRequest(job_type_id=job_type_id, input_params=struct(params))


def create_batch(client, requests, project="alpha", *, all_or_nothing=False, dispatch=False, **kw):
    params = processing_pb2.ProcessingCreateBatchParams(
        project_id=project, requests=requests, all_or_nothing=all_or_nothing, dispatch=dispatch
    )
    return client.execute("processing.create_batch", params, timeout=60, **kw)


def resubmit(client, job_id, overrides=None, **kw):
    params = processing_pb2.ProcessingJobsResubmitParams(job_id=job_id, input_params=struct(overrides or {}))
    return client.execute("processing.jobs.resubmit", params, **kw)


def watch_jobs(client, timeout=120, **request):
    return client.stub.WatchJobs(kernel_pb2.WatchJobsRequest(**request), metadata=client.metadata(), timeout=timeout)


def _failed_job(client, message="first") -> Any:
    created = client.execute(
        "processing.create_and_dispatch",
        processing_pb2.ProcessingCreateAndDispatchParams(
            project_id="alpha", job_type_id="test_fail", input_params=struct({"message": message})
        ),
    )
    return wait_terminal(client, created.job.id)


# -- resubmit -------------------------------------------------------------------


def test_resubmit_runs_a_finished_job_again_with_a_new_hold_a_link_and_overrides(batch_world):
    client = batch_world.client("alpha")
    original = _failed_job(client)
    assert original.status == STATUS.JOB_STATUS_FAILED
    before = balance(client)
    result = resubmit(client, original.id, {"message": "second", "retryable": None})
    job = result.job
    assert job.id and job.id != original.id
    assert job.resubmitted_from == original.id
    assert job.job_type_id == "test_fail" and job.status == STATUS.JOB_STATUS_DISPATCHED
    assert dict(job.input_params) == {"message": "second"}
    assert result.estimate.total_credits == job.credits_reserved == 3
    # A new hold of its own, in the ledger under the new job.
    assert [e.amount for e in ledger(client, job_id=job.id)][-1] == 3
    assert balance(client).available <= before.available - 3 + 3  # (the original's hold was released long ago)
    assert wait_terminal(client, job.id).status == STATUS.JOB_STATUS_FAILED
    # The original is left as it was.
    got = client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=original.id)).job
    assert got.status == STATUS.JOB_STATUS_FAILED and got.resubmitted_from == ""


def test_resubmit_is_idempotent_with_a_key_and_honours_validate_only(batch_world):
    client = batch_world.client("alpha")
    original = _failed_job(client)
    before = balance(client)
    dry = resubmit(client, original.id, validate_only=True)
    assert dry.job.id == "" and dry.estimate.total_credits == 3 and dry.job.resubmitted_from == original.id
    assert balance(client).held == before.held
    key = f"resubmit-{secrets.token_hex(4)}"
    first = resubmit(client, original.id, idempotency_key=key)
    again = resubmit(client, original.id, idempotency_key=key)
    assert first.job.id == again.job.id
    other = _fails(lambda: resubmit(client, original.id, {"message": "changed"}, idempotency_key=key))
    assert other.reason == "IDEMPOTENCY_KEY_REUSED"
    wait_terminal(client, first.job.id)


def test_resubmit_refuses_another_projects_job_an_unknown_job_and_an_unfinished_job(batch_world):
    alpha = batch_world.client("alpha")
    original = _failed_job(alpha)
    denied = _fails(lambda: resubmit(batch_world.client("beta"), original.id))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED and denied.reason == "PROJECT_ACCESS_DENIED"
    assert _fails(lambda: resubmit(alpha, "job_missing")).reason == "JOB_NOT_FOUND"
    assert _fails(lambda: resubmit(alpha, "")).reason == "JOB_ID_REQUIRED"
    pending = alpha.execute(
        "processing.create",
        processing_pb2.ProcessingCreateParams(project_id="alpha", job_type_id="test_noop", input_params=struct({})),
    ).job
    refused = _fails(lambda: resubmit(alpha, pending.id))
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION and refused.reason == "JOB_NOT_FINISHED"
    assert refused.metadata["status"] == "PENDING"
    alpha.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=pending.id))


# -- batches ----------------------------------------------------------------------


def _project_jobs(client, project="alpha") -> int:
    count, token = 0, ""
    while True:
        page = client.execute(
            "processing.jobs.list",
            processing_pb2.ProcessingJobsListParams(project_id=project, page_size=1000, page_token=token),
        )
        count += len(page.jobs)
        token = page.next_page_token
        if not token:
            return count


def test_an_all_or_nothing_batch_the_credits_cannot_cover_is_refused_whole(batch_world):
    client = batch_world.client("beta")
    before_balance, before_ledger, before_jobs = (
        balance(client, "beta"),
        ledger(client, "beta"),
        _project_jobs(client, "beta"),
    )
    requests = [_request("test_fail", {}) for _ in range(before_balance.available // 3 + 1)]
    refused = _fails(lambda: create_batch(client, requests, "beta", all_or_nothing=True))
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION and refused.reason == "INSUFFICIENT_CREDITS"
    assert int(refused.metadata["required"]) == 3 * len(requests)
    assert int(refused.metadata["available"]) == before_balance.available
    assert balance(client, "beta") == before_balance
    assert ledger(client, "beta") == before_ledger
    assert _project_jobs(client, "beta") == before_jobs
    # Without all_or_nothing the same batch holds what the balance holds, in order.
    partial = create_batch(client, requests, "beta")
    fitting = before_balance.available // 3
    assert partial.created_count == fitting
    assert [e.reason for e in partial.errors[fitting:]] == ["INSUFFICIENT_CREDITS"]
    assert balance(client, "beta").held == before_balance.held + 3 * fitting
    for job in partial.jobs[:fitting]:
        client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id))


def test_a_partial_batch_creates_the_valid_requests_and_reports_the_others_index_aligned(batch_world):
    client = batch_world.client("alpha")
    name = f"batch_{secrets.token_hex(3)}"
    requests = [
        _request("test_noop", {"note": "a"}),
        _request("no_such_type", {}),
        _request("test_noop", {"unknown_field": 1}),
        _request("test_cog", {"name": name}),
        _request("test_cog", {"name": name, "steps": 0}),  # below the schema's minimum
        _request("test_noop", {}),
    ]
    before = balance(client)
    result = create_batch(client, requests)
    reasons = [e.reason for e in result.errors]
    assert reasons == ["", "JOB_TYPE_NOT_FOUND", "INVALID_JOB_PARAMS", "", "INVALID_JOB_PARAMS", ""]
    assert [e.index for e in result.errors] == list(range(6))
    assert [bool(j.id) for j in result.jobs] == [True, False, False, True, False, True]
    assert result.errors[2].field.startswith("input_params") and result.errors[2].code == 3
    assert result.created_count == 3 and result.batch_id.startswith("batch")
    assert {j.batch_id for j in result.jobs if j.id} == {result.batch_id}
    assert all(j.status == STATUS.JOB_STATUS_PENDING for j in result.jobs if j.id)
    assert result.credits_reserved == 1 + 2 + 1 == balance(client).held - before.held
    for job in result.jobs:
        if job.id:
            client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id))


def test_an_all_or_nothing_batch_with_an_invalid_request_names_it_and_creates_nothing(batch_world):
    client = batch_world.client("alpha")
    before, jobs = balance(client), _project_jobs(client)
    requests = [_request("test_noop", {}), _request("test_noop", {"bad": True})]
    refused = _fails(lambda: create_batch(client, requests, all_or_nothing=True))
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT and refused.metadata["request_index"] == "1"
    assert all(field.startswith("requests[1].") for field, _ in refused.violations)
    assert balance(client) == before and _project_jobs(client) == jobs
    empty = _fails(lambda: create_batch(client, []))
    assert empty.reason == "BATCH_EMPTY"
    too_many = _fails(lambda: create_batch(client, [_request("test_noop", {})] * 1001))
    assert too_many.reason == "BATCH_TOO_LARGE" and too_many.metadata["max_requests"] == "1000"
    assert _fails(lambda: create_batch(batch_world.client("beta"), requests[:1])).code != grpc.StatusCode.OK
    denied = _fails(lambda: create_batch(batch_world.client("beta"), requests[:1], "alpha"))
    assert denied.reason == "PROJECT_ACCESS_DENIED"


def test_a_batch_is_idempotent_with_one_key_and_honours_validate_only(batch_world):
    client = batch_world.client("alpha")
    requests = [_request("test_noop", {}) for _ in range(3)]
    before = balance(client)
    dry = create_batch(client, requests, validate_only=True)
    assert dry.created_count == 3 and all(j.id == "" for j in dry.jobs) and dry.credits_reserved == 3
    assert balance(client) == before
    key = f"batch-{secrets.token_hex(4)}"
    first = create_batch(client, requests, idempotency_key=key)
    again = create_batch(client, requests, idempotency_key=key)
    assert [j.id for j in first.jobs] == [j.id for j in again.jobs] and first.batch_id == again.batch_id
    assert balance(client).held == before.held + 3
    for job in first.jobs:
        client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id))


def test_a_batch_of_1000_requests_creates_1000_jobs(batch_world):
    client = batch_world.client("alpha")
    batch_world.with_services(lambda s: s.credits.grant("alpha", 1000, "batch of 1000"))
    result = create_batch(client, [_request("test_noop", {"note": str(i)}) for i in range(1000)], all_or_nothing=True)
    assert result.created_count == 1000 and len({j.id for j in result.jobs}) == 1000
    assert [j.input_params["note"] for j in result.jobs] == [str(i) for i in range(1000)]
    assert not any(e.reason for e in result.errors)
    assert len(ledger(client, job_id=result.jobs[0].id)) == 1
    for job in result.jobs:
        client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id))


# -- WatchJobs ------------------------------------------------------------------


def _check_complete(events: list[kernel_pb2.WatchJobResponse], job_ids: set[str]) -> None:
    """Each job's events: contiguous sequences from its first, ending with a terminal status."""
    by_job: dict[str, list[kernel_pb2.WatchJobResponse]] = {}
    for event in events:
        by_job.setdefault(event.job.id, []).append(event)
    assert set(by_job) == job_ids
    for job_events in by_job.values():
        sequences = [e.sequence for e in job_events]
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), sequences
        assert job_events[-1].job.status in TERMINAL


def test_watch_jobs_follows_a_batch_delivering_every_event_and_resumes_per_job(batch_world):
    client = batch_world.client("alpha")
    requests = [_request("test_cog", {"name": f"w_{secrets.token_hex(4)}", "steps": 3}) for _ in range(12)]
    batch = create_batch(client, requests, dispatch=True, all_or_nothing=True)
    ids = {j.id for j in batch.jobs}
    # A first watch dropped after 15 events, then resumed with the map.
    first: list[kernel_pb2.WatchJobResponse] = []
    stream = watch_jobs(client, batch_id=batch.batch_id)
    for event in stream:
        first.append(event)
        if len(first) == 15:
            stream.cancel()
            break
    after = {}
    for event in first:
        after[event.job.id] = event.sequence
    rest = list(watch_jobs(client, batch_id=batch.batch_id, after_sequences=after))
    assert not {(e.job.id, e.sequence) for e in first} & {(e.job.id, e.sequence) for e in rest}
    _check_complete(first + rest, ids)
    assert all(e.event_type != "snapshot" for e in rest if e.job.id in after)
    # Everything since creation, per job, from the table.
    everything = list(watch_jobs(client, batch_id=batch.batch_id, after_sequences={i: 1 for i in ids}))
    _check_complete(everything, ids)
    kinds = {e.event_type for e in everything}
    assert {"dispatched", "assigned", "running", "succeeded"} <= kinds
    assert all(e.job.batch_id == batch.batch_id for e in everything)
    # A resume after the end sends nothing and ends OK.
    done = {i: max(e.sequence for e in everything if e.job.id == i) for i in ids}
    assert list(watch_jobs(client, batch_id=batch.batch_id, after_sequences=done)) == []


def test_watch_jobs_by_project_with_filters_and_its_refusals(batch_world):
    client = batch_world.client("alpha")
    pending = create_batch(client, [_request("test_noop", {}) for _ in range(3)])
    ids = {j.id for j in pending.jobs}
    stream = watch_jobs(client, project_id="alpha", status=STATUS.JOB_STATUS_PENDING, job_type_id="test_noop")
    seen: dict[str, kernel_pb2.WatchJobResponse] = {}
    for event in stream:
        seen.setdefault(event.job.id, event)
        if ids <= set(seen):
            break
    assert all(seen[i].event_type == "snapshot" for i in ids)
    for job_id in ids:
        client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job_id))
    rest = [e for e in stream if e.job.id in ids]
    assert {e.job.id for e in rest if e.job.status == STATUS.JOB_STATUS_CANCELLED} == ids

    def fails(**request) -> RpcFailure:
        with pytest.raises(grpc.RpcError) as info:
            list(watch_jobs(client, timeout=10, **request))
        return RpcFailure.from_rpc_error(info.value)

    assert fails().reason == "WATCH_TARGET_REQUIRED"
    assert fails(batch_id="batch_missing").reason == "BATCH_NOT_FOUND"
    assert fails(project_id="beta").reason == "PROJECT_ACCESS_DENIED"
    assert fails(batch_id=pending.batch_id, project_id="beta").reason == "BATCH_NOT_FOUND"
    assert fails(project_id="alpha", after_sequences={"job_x": -1}).reason == "INVALID_SEQUENCE"
    assert fails(project_id="alpha", status=99).reason == "INVALID_STATUS"
    beta = batch_world.client("beta")
    with pytest.raises(grpc.RpcError) as info:
        list(watch_jobs(beta, timeout=10, batch_id=pending.batch_id))
    assert RpcFailure.from_rpc_error(info.value).reason == "PROJECT_ACCESS_DENIED"


def test_two_all_or_nothing_batches_racing_for_the_same_credits_never_overspend(batch_world):
    """Each needs more than half of what is available: exactly one is created whole."""
    import concurrent.futures

    client = batch_world.client("beta")
    available = balance(client, "beta").available
    size = available // 3 // 2 + 1  # test_fail: 3 credits each
    requests = [_request("test_fail", {}) for _ in range(size)]

    def submit() -> str:
        try:
            return create_batch(client, requests, "beta", all_or_nothing=True).batch_id
        except RpcFailure as failure:
            return failure.reason

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda _: submit(), range(2)))
    assert sorted(o.startswith("batch") for o in outcomes) == [False, True], outcomes
    assert "INSUFFICIENT_CREDITS" in outcomes
    assert balance(client, "beta").available == available - 3 * size >= 0
    (batch_id,) = [o for o in outcomes if o.startswith("batch")]
    stream = watch_jobs(client, batch_id=batch_id, timeout=30)
    job_ids = []
    for event in stream:  # the batch's PENDING jobs: their snapshots, then the stream waits
        job_ids.append(event.job.id)
        if len(job_ids) == size:
            stream.cancel()
            break
    for job_id in job_ids:
        client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job_id))
