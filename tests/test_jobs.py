"""Processing jobs end to end: real PostgreSQL, a real server and real worker
processes running the test job types."""

from __future__ import annotations

import concurrent.futures
import secrets
import time

import grpc
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from geopera.v1 import catalog_pb2, processing_pb2, worker_pb2
from geopera_kernel.server.domain.jobs import JobRecord, event_snapshot
from geopera_kernel.server.domain.jobs.notices import EVENTS_CHANNEL, EventNotice
from tests.jobs_support import (
    STATUS,
    RawWorker,
    balance,
    create_and_dispatch,
    declaration_of,
    job_metadata,
    ledger,
    ledger_sums,
    running_world,
    struct,
    wait_for_job_type,
    wait_terminal,
    watch,
)
from tests.support.client import RpcFailure


@pytest.fixture(scope="module")
def jobs_world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("jobs"), workers=2) as world:
        yield world


def _fails(call) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        call()
    assert info.value.code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), info.value
    return info.value


def test_a_job_runs_end_to_end_with_every_event_provenance_and_exact_credits(jobs_world):
    client = jobs_world.client("alpha")
    source = jobs_world.items["s2l1c_slovenia_20150711_bgrn"]
    before = balance(client)
    result = create_and_dispatch(
        client,
        "test_cog",
        {"name": f"e2e_{secrets.token_hex(3)}", "source_item_ids": [source], "steps": 4, "step_seconds": 0.25},
    )
    job = result.job
    assert result.dispatch.accepted and "1 connected worker" not in result.dispatch.message
    assert job.status == STATUS.JOB_STATUS_DISPATCHED
    assert job.credits_reserved == 2 + 1 * 1  # flat 2 + 1 per source asset
    assert balance(client).held - before.held == job.credits_reserved

    # The whole history after creation (a plain watch may start at a later
    # snapshot when the worker is quick), then a plain watch of the ended job.
    events = watch(client, job.id, after=1)
    sequences = [e.sequence for e in events]
    assert sequences == list(range(2, sequences[-1] + 1))
    kinds = [e.event_type for e in events]
    assert kinds[:3] == ["dispatched", "assigned", "running"] and kinds[-1] == "succeeded"
    assert [e.event_type for e in watch(client, job.id)] == ["snapshot"]
    statuses = [e.job.status for e in events]
    order = [STATUS.JOB_STATUS_DISPATCHED, STATUS.JOB_STATUS_RUNNING, STATUS.JOB_STATUS_SUCCEEDED]
    assert [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]] == order
    progress = [e.job.progress for e in events if e.job.status == STATUS.JOB_STATUS_RUNNING]
    assert progress == sorted(progress) and any(0 < p < 1 for p in progress)
    final = events[-1].job
    assert final.progress == 1.0 and final.attempt == 1 and final.worker_id
    assert final.start_time.seconds and final.end_time.seconds and final.dispatch_time.seconds
    assert len(final.output_item_ids) == 1

    # Provenance: output -> job and output -> source, exactly.
    output_id = final.output_item_ids[0]
    output = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=output_id)).item
    assert output.job_id == job.id and list(output.source_item_ids) == [source]
    assert output.collection_id == "test_cog" and output.assets["data"].bands[0].name == "value"
    lineage = client.execute("items.lineage", catalog_pb2.ItemsLineageParams(item_id=output_id))
    assert {(e.output_item_id, e.relation, e.job_id, e.source_item_id) for e in lineage.edges} == {
        (output_id, "generated_by", job.id, ""),
        (output_id, "derived_from", job.id, source),
    }
    downstream = client.execute("items.lineage", catalog_pb2.ItemsLineageParams(item_id=source, direction="downstream"))
    assert output_id in {n.id for n in downstream.nodes}

    # Credits: the actual cost (flat 2 + 1 output asset = 3) captured, nothing held.
    assert final.credits_charged == 3
    after = balance(client)
    assert after.held == before.held
    assert before.available - after.available == 3
    entries = ledger(client, job_id=job.id)
    assert sorted((e.kind, e.amount) for e in entries) == [(2, 3), (3, 3)]  # reserve 3, capture 3


def test_the_ledger_sums_to_the_balance(jobs_world):
    client = jobs_world.client("alpha")
    sums = ledger_sums(ledger(client))
    current = balance(client)
    assert current.available == sums["grant"] - sums["reserve"] + sums["release"]
    assert current.held == sums["reserve"] - sums["capture"] - sums["release"]
    assert current.granted_total == sums["grant"] and current.captured_total == sums["capture"]


def test_a_failing_job_fails_inside_the_job_and_releases_its_credits(jobs_world):
    client = jobs_world.client("alpha")
    before = balance(client)
    job = create_and_dispatch(client, "test_fail", {"reason": "BAD_PIXELS", "message": "no water here"}).job
    final = wait_terminal(client, job.id)
    assert final.status == STATUS.JOB_STATUS_FAILED
    assert final.error.code == grpc.StatusCode.ABORTED.value[0]
    assert "no water here" in final.error.message
    assert final.credits_charged == 0 and final.attempt == 1  # not retryable: one attempt
    assert balance(client).available == before.available and balance(client).held == before.held
    assert sorted((e.kind, e.amount) for e in ledger(client, job_id=job.id)) == [(2, 3), (4, 3)]  # reserve, release


def test_retryable_failures_use_every_attempt_then_fail(jobs_world):
    client = jobs_world.client("alpha")
    before = balance(client)
    job = create_and_dispatch(client, "test_fail", {"retryable": True}).job
    events = watch(client, job.id, after=1)
    assert [e.event_type for e in events].count("retrying") == 2
    assert [e.job.attempt for e in events if e.event_type == "assigned"] == [1, 2, 3]
    final = events[-1].job
    assert final.status == STATUS.JOB_STATUS_FAILED and final.attempt == 3
    assert "ATTEMPTS_EXHAUSTED" in str(final.error)
    assert final.credits_charged == 0 and balance(client) == before


def test_a_retry_can_succeed(jobs_world):
    client = jobs_world.client("alpha")
    job = create_and_dispatch(client, "test_fail", {"retryable": True, "succeed_from_attempt": 2}).job
    events = watch(client, job.id, after=1)
    final = events[-1].job
    assert final.status == STATUS.JOB_STATUS_SUCCEEDED and final.attempt == 2
    assert [e.event_type for e in events].count("retrying") == 1
    assert [e.job.attempt for e in events if e.event_type == "assigned"] == [1, 2]


def test_a_crashing_plugin_is_retried_as_a_worker_error(jobs_world):
    client = jobs_world.client("alpha")
    job = create_and_dispatch(client, "test_fail", {"crash": True, "message": "boom"}).job
    events = watch(client, job.id, after=1)
    final = events[-1].job
    assert final.status == STATUS.JOB_STATUS_FAILED and final.attempt == 3
    # The worker caught the crash and reported it as a retryable worker error, each time.
    retries = [e.job.message for e in events if e.event_type == "retrying"]
    assert len(retries) == 2 and all("RuntimeError: boom" in m for m in retries), retries
    assert "ATTEMPTS_EXHAUSTED" in str(final.error) and "RuntimeError: boom" in final.error.message
    assert final.credits_charged == 0


def test_cancelling_a_running_job_stops_the_worker_and_releases_credits(jobs_world):
    client = jobs_world.client("alpha")
    before = balance(client)
    job = create_and_dispatch(
        client, "test_cog", {"name": f"cancel_{secrets.token_hex(3)}", "steps": 100, "step_seconds": 0.1}
    ).job
    deadline = time.monotonic() + 20
    while client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job.id)).job.status != (
        STATUS.JOB_STATUS_RUNNING
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelled = client.execute(
        "processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id, reason="changed my mind")
    ).job
    assert cancelled.status == STATUS.JOB_STATUS_CANCELLED and "changed my mind" in cancelled.error.message
    assert balance(client).held == before.held and balance(client).available == before.available
    # The worker running it was told and stopped it.
    deadline = time.monotonic() + 20
    logs = sorted(jobs_world.home.glob("worker-*.log"))
    while not any(f"job {job.id} cancelled by the server" in log.read_text() for log in logs):
        assert time.monotonic() < deadline, "no worker stopped the cancelled job"
        time.sleep(0.1)
    time.sleep(1.0)
    final = client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job.id)).job
    assert final.status == STATUS.JOB_STATUS_CANCELLED and not final.output_item_ids
    assert final.progress < 1.0
    again = client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id)).job
    assert again.status == STATUS.JOB_STATUS_CANCELLED
    done = create_and_dispatch(client, "test_noop", {}).job
    wait_terminal(client, done.id)
    failure = _fails(
        lambda: client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=done.id))
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_ALREADY_FINISHED")


def test_create_then_dispatch(jobs_world):
    client = jobs_world.client("alpha")
    created = client.execute(
        "processing.create",
        processing_pb2.ProcessingCreateParams(project_id="alpha", job_type_id="test_noop", input_params=struct({})),
    ).job
    assert created.status == STATUS.JOB_STATUS_PENDING and created.credits_reserved == 1
    time.sleep(0.5)
    assert (
        client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=created.id)).job.status
        == STATUS.JOB_STATUS_PENDING
    )  # a pending job is not run
    dispatched = client.execute("processing.dispatch", processing_pb2.ProcessingDispatchParams(job_id=created.id))
    assert dispatched.dispatch.accepted and dispatched.job.status == STATUS.JOB_STATUS_DISPATCHED
    assert wait_terminal(client, created.id).status == STATUS.JOB_STATUS_SUCCEEDED
    failure = _fails(
        lambda: client.execute("processing.dispatch", processing_pb2.ProcessingDispatchParams(job_id=created.id))
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_DISPATCHABLE")


def test_input_params_are_validated_against_the_job_types_schema(jobs_world):
    client = jobs_world.client("alpha")
    before = balance(client)
    failure = _fails(lambda: create_and_dispatch(client, "test_cog", {"steps": "many", "bogus": 1}))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_JOB_PARAMS")
    fields = {f for f, _ in failure.violations}
    assert "input_params" in fields or "input_params.steps" in fields
    assert "input_params.steps" in fields
    assert failure.expected_schema is not None and failure.expected_schema.subject == "test_cog"
    assert "name" in failure.expected_schema.json_schema["properties"]
    failure = _fails(lambda: create_and_dispatch(client, "no_such_type", {}))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "JOB_TYPE_NOT_FOUND")
    assert balance(client) == before


def test_job_types_are_published_with_schema_and_cost_model(jobs_world):
    client = jobs_world.client("alpha")
    wait_for_job_type(jobs_world, "test_cog", workers=2)  # both heartbeating within the lease
    types = client.execute("processing.job_types.list", processing_pb2.ProcessingJobTypesListParams()).job_types
    by_id = {t.job_type_id: t for t in types}
    assert {"clip", "bathymetry", "test_cog", "test_noop", "test_fail"} <= set(by_id)
    assert by_id["clip"].builtin and not by_id["test_cog"].builtin
    assert by_id["test_cog"].connected_workers == 2
    assert by_id["test_cog"].cost_model.flat == 2 and by_id["test_cog"].cost_model.per_asset == 1
    assert by_id["clip"].input_schema["properties"]["aoi_geometry"]
    workers = jobs_world.client("admin").execute("workers.list", processing_pb2.WorkersListParams()).workers
    assert len(workers) == 2 and all(w.connected and w.capacity == 2 for w in workers)


def test_jobs_list_filters_and_pages(jobs_world):
    client = jobs_world.client("beta")
    ids = [create_and_dispatch(client, "test_noop", {}, project="beta").job.id for _ in range(5)]
    failed = create_and_dispatch(client, "test_fail", {}, project="beta").job.id
    for job_id in [*ids, failed]:
        wait_terminal(client, job_id)
    seen, token = [], ""
    while True:
        page = client.execute(
            "processing.jobs.list",
            processing_pb2.ProcessingJobsListParams(project_id="beta", page_size=2, page_token=token),
        )
        assert len(page.jobs) <= 2
        seen += [j.id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen[: len(ids) + 1] == [failed, *reversed(ids)]  # newest first
    only_failed = client.execute(
        "processing.jobs.list",
        processing_pb2.ProcessingJobsListParams(project_id="beta", status=STATUS.JOB_STATUS_FAILED),
    ).jobs
    assert [j.id for j in only_failed] == [failed]
    noop = client.execute(
        "processing.jobs.list", processing_pb2.ProcessingJobsListParams(project_id="beta", job_type_id="test_noop")
    ).jobs
    assert {j.id for j in noop} == set(ids)


def test_job_tokens_are_confined_to_their_job(jobs_world):
    raw = RawWorker(jobs_world.channel, jobs_world.tokens["worker"], ["raw_only"])
    try:
        client = jobs_world.client("alpha")
        first = create_and_dispatch(client, "raw_only", {}).job
        second = create_and_dispatch(client, "raw_only", {}).job
        assignment = raw.next_assignment()
        token = assignment.job_token
        assert assignment.job.id in (first.id, second.id) and assignment.attempt == 1
        other = second.id if assignment.job.id == first.id else first.id

        # A job token may not Execute anything.
        job_client = jobs_world.client(token)
        failure = _fails(
            lambda: job_client.execute(
                "processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=assignment.job.id)
            )
        )
        assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "JOB_TOKEN_NOT_ALLOWED")
        # ... nor register another job's outputs ...
        with pytest.raises(grpc.RpcError) as info:
            raw.stub.RegisterOutputs(
                iter([worker_pb2.RegisterOutputsRequest(job_id=other, commit=True)]), metadata=job_metadata(token)
            )
        failure = RpcFailure.from_rpc_error(info.value)
        assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "JOB_TOKEN_MISMATCH")
        # ... nor report on it, nor open a worker session.
        with pytest.raises(grpc.RpcError) as info:
            raw.stub.ReportProgress(
                worker_pb2.ReportProgressRequest(job_id=other, progress=0.5), metadata=job_metadata(token)
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A user token cannot use the job-token calls.
        with pytest.raises(grpc.RpcError) as info:
            raw.stub.ReportProgress(
                worker_pb2.ReportProgressRequest(job_id=assignment.job.id, progress=0.5),
                metadata=job_metadata(jobs_world.tokens["alpha"]),
            )
        assert RpcFailure.from_rpc_error(info.value).reason == "JOB_TOKEN_REQUIRED"
        # Its own job it may report on; a commit with no outputs completes it.
        reply = raw.stub.ReportProgress(
            worker_pb2.ReportProgressRequest(job_id=assignment.job.id, progress=0.5), metadata=job_metadata(token)
        )
        assert not reply.cancel_requested
        done = raw.stub.RegisterOutputs(
            iter([worker_pb2.RegisterOutputsRequest(job_id=assignment.job.id, commit=True)]),
            metadata=job_metadata(token),
        )
        assert done.job.status == STATUS.JOB_STATUS_SUCCEEDED
        # A retry after the commit replays the same response and registers nothing twice.
        again = raw.stub.RegisterOutputs(
            iter([worker_pb2.RegisterOutputsRequest(job_id=assignment.job.id, commit=True)]),
            metadata=job_metadata(token),
        )
        assert again == done
        # The finished attempt's token can no longer report.
        with pytest.raises(grpc.RpcError) as info:
            raw.stub.ReportProgress(
                worker_pb2.ReportProgressRequest(job_id=assignment.job.id, progress=0.9), metadata=job_metadata(token)
            )
        assert RpcFailure.from_rpc_error(info.value).reason == "JOB_ATTEMPT_OVER"
        second_assignment = raw.next_assignment()
        assert second_assignment.job.id == other
        client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=other))
        assert raw.cancels.get(timeout=10) == other
    finally:
        raw.die()


def test_a_dead_workers_token_stops_working_and_the_job_moves_on(jobs_world):
    client = jobs_world.client("alpha")
    name = f"orphan_{secrets.token_hex(3)}"
    # Occupy both real workers (2 x capacity 2), so the next job can only go to the raw worker.
    busy = [
        create_and_dispatch(client, "test_cog", {"name": f"{name}_busy{i}", "steps": 20, "step_seconds": 0.2}).job.id
        for i in range(4)
    ]
    deadline = time.monotonic() + 20
    while any(
        client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=j)).job.status
        != STATUS.JOB_STATUS_RUNNING
        for j in busy
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    raw = RawWorker(jobs_world.channel, jobs_world.tokens["worker"], [declaration_of(jobs_world, "test_cog")])
    create_and_dispatch(client, "test_cog", {"name": f"{name}_orphan"})
    dead_job = raw.next_assignment(timeout=10)
    raw.die()
    final = wait_terminal(client, dead_job.job.id, timeout=60)
    assert final.status == STATUS.JOB_STATUS_SUCCEEDED and final.attempt == 2
    assert final.worker_id != raw.welcome.worker_id
    stub = raw.stub
    for call in (
        lambda: stub.ReportProgress(
            worker_pb2.ReportProgressRequest(job_id=dead_job.job.id, progress=0.5),
            metadata=job_metadata(dead_job.job_token),
        ),
        lambda: stub.RegisterOutputs(
            iter([worker_pb2.RegisterOutputsRequest(job_id=dead_job.job.id, commit=True)]),
            metadata=job_metadata(dead_job.job_token),
        ),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        failure = RpcFailure.from_rpc_error(info.value)
        assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_ATTEMPT_OVER"), failure
    assert len(final.output_item_ids) == 1
    entries = ledger(client, job_id=dead_job.job.id)
    assert [e.kind for e in entries].count(3) == 1  # captured once
    for job_id in busy:
        wait_terminal(client, job_id)


def test_a_broken_output_stream_leaves_nothing(jobs_world):
    raw = RawWorker(jobs_world.channel, jobs_world.tokens["worker"], ["raw_outputs"])
    try:
        client = jobs_world.client("alpha")
        job = create_and_dispatch(client, "raw_outputs", {}).job
        assignment = raw.next_assignment()
        metadata = job_metadata(assignment.job_token)
        item = worker_pb2.OutputItem(
            output_key="0",
            name=f"broken_{secrets.token_hex(3)}",
            geometry=struct(
                {"type": "Polygon", "coordinates": [[[14.55, 45.86], [14.56, 45.86], [14.56, 45.87], [14.55, 45.86]]]}
            ),
            assets=[worker_pb2.OutputAsset(key="data")],
        )
        data = b"not a tiff" * 100
        # 1. The stream ends without commit.
        with pytest.raises(grpc.RpcError) as info:
            raw.stub.RegisterOutputs(
                iter(
                    [
                        worker_pb2.RegisterOutputsRequest(job_id=job.id, item=item),
                        worker_pb2.RegisterOutputsRequest(
                            chunk=worker_pb2.OutputChunk(output_key="0", asset_key="data", data=data, finish_write=True)
                        ),
                    ]
                ),
                metadata=metadata,
            )
        assert RpcFailure.from_rpc_error(info.value).reason == "INCOMPLETE_UPLOAD"
        # A broken-off stream leaves the attempt live: the outputs may be sent again.
        state = client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job.id)).job
        assert state.status in (STATUS.JOB_STATUS_DISPATCHED, STATUS.JOB_STATUS_RUNNING)
        # 2. A committed stream whose asset is not a raster: refused, and the job fails with that reason.
        with pytest.raises(grpc.RpcError) as info:
            raw.stub.RegisterOutputs(
                iter(
                    [
                        worker_pb2.RegisterOutputsRequest(job_id=job.id, item=item),
                        worker_pb2.RegisterOutputsRequest(
                            chunk=worker_pb2.OutputChunk(output_key="0", asset_key="data", data=data, finish_write=True)
                        ),
                        worker_pb2.RegisterOutputsRequest(commit=True),
                    ]
                ),
                metadata=metadata,
            )
        failure = RpcFailure.from_rpc_error(info.value)
        assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_RASTER_FORMAT")
        state = client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job.id)).job
        assert state.status == STATUS.JOB_STATUS_FAILED and state.attempt == 1
        assert state.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "UNSUPPORTED_RASTER_FORMAT" in str(state.error)
        # 3. An output claiming a source the job does not have (another job: the first one is over).
        job = create_and_dispatch(client, "raw_outputs", {}).job
        metadata = job_metadata(raw.next_assignment().job_token)
        foreign = worker_pb2.OutputItem()
        foreign.CopyFrom(item)
        foreign.source_item_ids.append(jobs_world.items["s2l1c_slovenia_20150909_bgrn"])
        with pytest.raises(grpc.RpcError) as info:
            raw.stub.RegisterOutputs(
                iter(
                    [
                        worker_pb2.RegisterOutputsRequest(job_id=job.id, item=foreign),
                        worker_pb2.RegisterOutputsRequest(commit=True),
                    ]
                ),
                metadata=metadata,
            )
        assert RpcFailure.from_rpc_error(info.value).reason == "INVALID_OUTPUT"
        # Nothing was registered.
        state = client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job.id)).job
        assert state.status == STATUS.JOB_STATUS_FAILED and "INVALID_OUTPUT" in str(state.error)
        assert not state.output_item_ids
        listed = client.execute(
            "items.list", catalog_pb2.ItemsListParams(project_id="alpha", collection_id="raw_outputs")
        )
        assert not listed.items
        storage = jobs_world.home / "storage" / "projects" / "alpha" / "items"
        registered = {p.name for p in storage.iterdir()}
        all_items = client.execute("items.list", catalog_pb2.ItemsListParams(project_id="alpha", page_size=1000)).items
        assert registered <= {i.id for i in all_items}
    finally:
        raw.die()


def test_concurrent_creates_with_one_idempotency_key_make_one_job(jobs_world):
    client = jobs_world.client("alpha")
    key = f"idem-{secrets.token_hex(6)}"
    before = balance(client)
    params = processing_pb2.ProcessingCreateParams(project_id="alpha", job_type_id="test_noop", input_params=struct({}))

    def create():
        try:
            return client.execute("processing.create", params, idempotency_key=key).job.id
        except RpcFailure as failure:
            return failure

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        outcomes = list(pool.map(lambda _: create(), range(50)))
    job_ids = {o for o in outcomes if isinstance(o, str)}
    errors = [o for o in outcomes if not isinstance(o, str)]
    assert len(job_ids) == 1, outcomes
    assert all((e.code, e.reason) == (grpc.StatusCode.ABORTED, "IDEMPOTENCY_KEY_IN_USE") for e in errors), errors
    (job_id,) = job_ids
    assert [e.kind for e in ledger(client, job_id=job_id)] == [2]  # one reservation
    assert balance(client).held == before.held + 1
    # Same key, other params: refused.
    other = processing_pb2.ProcessingCreateParams(
        project_id="alpha", job_type_id="test_noop", input_params=struct({"note": "different"})
    )
    failure = _fails(lambda: client.execute("processing.create", other, idempotency_key=key))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
    # Same key, same params, later: the first response again.
    again = client.execute("processing.create", params, idempotency_key=key).job
    assert again.id == job_id and again.status == STATUS.JOB_STATUS_PENDING
    client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job_id))
    bad = _fails(lambda: client.execute("processing.create", params, idempotency_key="has space"))
    assert bad.reason == "INVALID_IDEMPOTENCY_KEY"


def test_clip_with_an_idempotency_key_is_done_once(jobs_world):
    import json

    from tests.conftest import SAMPLES

    client = jobs_world.client("alpha")
    aoi = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
    params = processing_pb2.ClipCreateFromItemParams(
        source_item_id=jobs_world.items["s2l1c_slovenia_20150711_bgrn"],
        project_id="alpha",
        aoi_geometry=struct(aoi),
        output_name=f"clip_{secrets.token_hex(3)}",
    )
    key = f"clip-{secrets.token_hex(6)}"
    first = client.execute("clip.create_from_item", params, idempotency_key=key)
    second = client.execute("clip.create_from_item", params, idempotency_key=key)
    assert first == second and first.assets_to_clip == 1 and list(first.asset_keys) == ["data"]
    final = wait_terminal(client, first.job.id)
    assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error


def test_non_finite_numbers_in_free_form_params_are_refused(jobs_world):
    client = jobs_world.client("alpha")
    params = struct({"note": "x"})
    params.fields["note"].number_value = float("nan")
    failure = _fails(lambda: client.execute(
        "processing.create",
        processing_pb2.ProcessingCreateParams(project_id="alpha", job_type_id="test_noop", input_params=params),
    ))  # fmt: skip
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NON_FINITE_NUMBER")
    assert failure.violations[0][0] == "input_params.note"
    properties = struct({"cloud": 1.0})
    properties.fields["cloud"].number_value = float("inf")
    failure = _fails(lambda: client.execute(
        "items.create",
        catalog_pb2.ItemsCreateParams(project_id="alpha", name="x_20200101", properties=properties,
                                      assets=[catalog_pb2.AssetInput(key="data", upload_id="up_x")]),
    ))  # fmt: skip
    assert (failure.reason, failure.violations[0][0]) == ("NON_FINITE_NUMBER", "properties.cloud")


def test_progress_events_snapshots_are_byte_identical_to_event_snapshot(jobs_world):
    """ReportProgress builds its event's snapshot in SQL (one statement); it must
    equal, byte for byte, what event_snapshot() makes of the updated row."""
    raw = RawWorker(jobs_world.channel, jobs_world.tokens["worker"], ["raw_only"])
    try:
        client = jobs_world.client("alpha")
        job = create_and_dispatch(client, "raw_only", {"note": "snapshot"}).job
        assignment = raw.next_assignment()
        assert assignment.job.id == job.id
        metadata = job_metadata(assignment.job_token)
        with psycopg.connect(jobs_world.database_url, row_factory=dict_row, autocommit=True) as conn:
            # The formats' edge cases: a whole second (isoformat leaves out the
            # microseconds), trailing zeros, an earlier attempt's error.
            conn.execute(
                "UPDATE jobs SET create_time = date_trunc('second', create_time),"
                " dispatch_time = date_trunc('second', dispatch_time) + interval '0.12345 s',"
                ' error = \'{"code": 10, "reason": "JOB_FAILED", "message": "m"}\' WHERE id = %s',
                (job.id,),
            )
            for progress, message in [(0.0, "start"), (1e-05, "tiny"), (0.1, ""), (1 / 3, 'é ✓ "q"'), (1.0, "end")]:
                raw.stub.ReportProgress(
                    worker_pb2.ReportProgressRequest(job_id=job.id, progress=progress, message=message),
                    metadata=metadata,
                )
                row = conn.execute("SELECT * FROM jobs WHERE id = %s", (job.id,)).fetchone()
                snapshot = Jsonb(event_snapshot(JobRecord.from_row(row)))
                expected = conn.execute("SELECT %s::jsonb::text AS s", (snapshot,))
                stored = conn.execute(
                    "SELECT snapshot::text AS s, event_type FROM job_events WHERE job_id = %s AND sequence = %s",
                    (job.id, row["sequence"]),
                ).fetchone()
                assert stored is not None
                assert stored["s"] == expected.fetchone()["s"]
                assert stored["event_type"] == ("running" if progress == 0.0 else "progress")
    finally:
        raw.die()


def test_announced_events_decode_to_the_events_stored(jobs_world):
    """Watchers build events from the NOTIFY payloads (domain.jobs.notices) and
    read the table only to catch up: both must give the same events."""
    raw = RawWorker(jobs_world.channel, jobs_world.tokens["worker"], ["raw_only"])
    try:
        with psycopg.connect(jobs_world.database_url, row_factory=dict_row, autocommit=True) as conn:
            conn.execute(f"LISTEN {EVENTS_CHANNEL}")
            client = jobs_world.client("alpha")
            job = create_and_dispatch(client, "raw_only", {"note": "announced"}).job
            assignment = raw.next_assignment()
            raw.stub.ReportProgress(
                worker_pb2.ReportProgressRequest(job_id=job.id, progress=0.5, message="half"),
                metadata=job_metadata(assignment.job_token),
            )
            notices = []
            deadline = time.monotonic() + 10
            while len(notices) < 4 and time.monotonic() < deadline:  # created, dispatched, assigned, running
                for note in conn.notifies(timeout=1.0):
                    notice = EventNotice.decode(note.payload)
                    if notice.job_id == job.id:
                        notices.append(notice)
            rows = conn.execute(
                "SELECT e.sequence, e.event_type, e.event_time, e.snapshot, j.input_params"
                " FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE e.job_id = %s ORDER BY e.sequence",
                (job.id,),
            ).fetchall()
        stored = [
            (
                r["sequence"],
                r["event_type"],
                r["event_time"],
                JobRecord.from_json({**r["snapshot"], "input_params": r["input_params"]}),
            )
            for r in rows
        ]
        announced = []
        for notice in notices:
            event = notice.event({"note": "announced"})
            assert event is not None  # small snapshots travel in the payload
            assert (notice.terminal, notice.worker_id) == (event.job.terminal, event.job.worker_id)
            announced.append((event.sequence, event.event_type, event.event_time, event.job))
        assert [e[1] for e in announced] == ["created", "dispatched", "assigned", "running"]
        assert announced == stored[: len(announced)]
    finally:
        raw.die()
