"""Analytics jobs from the worker's side of the wire (issue 13.6), with a raw worker
session holding the job token: what the token may read (only the job's sources), and
what RegisterOutputs takes from an analytics job (its result and files of the allowed
media types, no items) and from any other job (no result, no files). Each refusal ends
the job FAILED with its reason. Against the real server and database."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from geopera.v1 import analytics_pb2, catalog_pb2, kernel_pb2, kernel_pb2_grpc, processing_pb2, worker_pb2
from tests.jobs_support import (
    STATUS,
    RawWorker,
    create_and_dispatch,
    declaration_of,
    job_metadata,
    start_world,
    struct,
)
from tests.support.client import RpcFailure
from tests.test_analytics_jobs import AFTER, SOURCE, small_square

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


@pytest.fixture(scope="module")
def raw_world(database_factory, tmp_path_factory) -> Iterator[Any]:
    world = start_world(database_factory.create(), tmp_path_factory.mktemp("analytics_jobs_worker"))
    raw = RawWorker(world.channel, world.tokens["worker"], [declaration_of(world, "analytics"), "raw_outputs"],
                    capacity=4)  # fmt: skip
    try:
        yield world, raw
    finally:
        raw.die()
        assert world.channel is not None
        world.channel.close()
        world.server.stop()


def submit_and_take(world, raw: RawWorker) -> worker_pb2.JobAssignment:
    params = {"item_id": world.items[SOURCE], "index_name": "NDVI", "geometry": small_square()}
    request = analytics_pb2.AnalyticsSubmitParams(operation="zonal_stats", params=struct(params), project_id="alpha")
    job = world.client("alpha").execute("analytics.submit", request).job
    assert job.status == STATUS.JOB_STATUS_DISPATCHED and job.credits_reserved == 0
    assignment = raw.next_assignment(timeout=60)
    assert assignment.job.id == job.id and assignment.job.job_type_id == "analytics"
    assert [item.id for item in assignment.source_items] == [world.items[SOURCE]]
    return assignment


def register(raw: RawWorker, assignment: worker_pb2.JobAssignment, messages: list[Any]):
    requests = [worker_pb2.RegisterOutputsRequest(job_id=assignment.job.id, **messages[0])]
    requests += [worker_pb2.RegisterOutputsRequest(**message) for message in messages[1:]]
    requests.append(worker_pb2.RegisterOutputsRequest(commit=True))
    return raw.stub.RegisterOutputs(iter(requests), metadata=job_metadata(assignment.job_token), timeout=60)


def refused(raw: RawWorker, assignment: worker_pb2.JobAssignment, messages: list[Any]) -> RpcFailure:
    with pytest.raises(grpc.RpcError) as info:
        register(raw, assignment, messages)
    return RpcFailure.from_rpc_error(info.value)


def job_of(world, job_id: str):
    request = processing_pb2.ProcessingJobsGetParams(job_id=job_id)
    return world.client("alpha").execute("processing.jobs.get", request).job


def cancel(world, job_id: str) -> None:
    with contextlib.suppress(RpcFailure):  # it may have ended already
        request = processing_pb2.ProcessingJobsCancelParams(job_id=job_id)
        world.client("alpha").execute("processing.jobs.cancel", request)


def answer(operation: str = "zonal_stats", result: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"analytics_result": worker_pb2.AnalyticsJobResult(operation=operation, result=struct(result or {"n": 1}))}


def artifact(key: str, media_type: str, data: bytes) -> list[dict[str, Any]]:
    declared = worker_pb2.OutputArtifact(key=key, media_type=media_type, title=key, size_bytes=len(data))
    return [
        {"artifact": declared},
        {"chunk": worker_pb2.OutputChunk(artifact_key=key, data=data)},
        {"chunk": worker_pb2.OutputChunk(artifact_key=key, write_offset=len(data), finish_write=True)},
    ]


def test_the_job_token_reads_the_jobs_sources_and_nothing_else(raw_world):
    world, raw = raw_world
    assignment = submit_and_take(world, raw)
    kernel = kernel_pb2_grpc.KernelServiceStub(world.channel)
    metadata = job_metadata(assignment.job_token)

    def download(item_id: str) -> bytes:
        request = kernel_pb2.DownloadAssetRequest(resource_name=f"items/{item_id}/assets/data")
        return b"".join(chunk.data for chunk in kernel.DownloadAsset(request, metadata=metadata, timeout=60))

    assert len(download(world.items[SOURCE])) > 0
    for other in (world.items[AFTER], world.beta_items[SOURCE]):
        with pytest.raises(grpc.RpcError) as info:
            download(other)
        failure = RpcFailure.from_rpc_error(info.value)
        assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "JOB_TOKEN_NOT_ALLOWED")
    # Nor any operation (a job token is no user's).
    with pytest.raises(RpcFailure) as denied:
        world.client(assignment.job_token).execute("items.get", catalog_pb2.ItemsGetParams(item_id=world.items[SOURCE]))
    assert denied.value.reason == "JOB_TOKEN_NOT_ALLOWED"
    # Then it answers: the result and a JSON file become the job's artifacts.
    done = register(raw, assignment, [answer(result={"count": 3, "mean": 0.5}), *artifact("extra", "application/json",
                                                                                         b'{"a": 1}')])  # fmt: skip
    assert done.job.status == STATUS.JOB_STATUS_SUCCEEDED and list(done.items) == []
    keys = [(a.key, a.media_type) for a in done.job.output_artifacts]
    assert keys == [("result", "application/json"), ("extra", "application/json")]
    body, _ = world.client("alpha").download(done.job.output_artifacts[0].href)
    stored = json.loads(body)
    assert stored["operation"] == "zonal_stats" and stored["result"]["mean"] == 0.5
    assert [o["id"] for o in stored["outputs"]] == [done.job.output_artifacts[1].id]
    assert world.client("alpha").download(done.job.output_artifacts[1].href)[0] == b'{"a": 1}'
    # A resend after the commit replays the first answer and stores nothing twice.
    again = register(raw, assignment, [answer(result={"count": 3, "mean": 0.5})])
    assert again.job.output_artifacts == done.job.output_artifacts


@pytest.mark.parametrize(
    ("case", "messages", "field"),
    [
        ("no result", artifact("img", "image/png", PNG), "analytics_result"),
        ("two results", [answer(), answer()], "analytics_result"),
        ("another method", [answer("time_series")], "analytics_result.operation"),
        ("html served as an artifact", [answer(), *artifact("page", "text/html", b"<script>")], "artifact.media_type"),
        ("bytes not of the media type", [answer(), *artifact("img", "image/png", b"<script>")], "artifacts[img]"),
        ("a tiff that is no raster", [answer(), *artifact("cog", "image/tiff; application=geotiff", PNG)],
         "artifacts[cog]"),
        ("the result's key", [answer(), *artifact("result", "application/json", b"{}")], "artifact.key"),
        ("a title past its limit", [answer(), {"artifact": worker_pb2.OutputArtifact(key="t", title="x" * 501,
                                                                                     media_type="image/png")}],
         "artifact.title"),
        ("an item", [answer(), {"item": worker_pb2.OutputItem(output_key="0", name="x")}], "item"),
    ],
)  # fmt: skip
def test_outputs_an_analytics_job_may_not_register_are_refused_and_fail_it(raw_world, case, messages, field):
    world, raw = raw_world
    assignment = submit_and_take(world, raw)
    try:
        failure = refused(raw, assignment, messages)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, case
        assert failure.reason in ("INVALID_OUTPUT", "NOT_A_COG", "UNREADABLE_RASTER", "UNSUPPORTED_RASTER_FORMAT")
        assert failure.violations and failure.violations[0][0] == field, (case, failure.violations)
        ended = job_of(world, assignment.job.id)
        assert ended.status == STATUS.JOB_STATUS_FAILED and list(ended.output_artifacts) == [], case
    finally:
        cancel(world, assignment.job.id)  # a failed check leaves no job holding the raw worker's capacity


def test_another_jobs_token_and_another_job_type_cannot_register_answers(raw_world):
    world, raw = raw_world
    first, second = submit_and_take(world, raw), submit_and_take(world, raw)
    # The token of one job for the other.
    requests = [worker_pb2.RegisterOutputsRequest(job_id=second.job.id, **answer()),
                worker_pb2.RegisterOutputsRequest(commit=True)]  # fmt: skip
    with pytest.raises(grpc.RpcError) as info:
        raw.stub.RegisterOutputs(iter(requests), metadata=job_metadata(first.job_token), timeout=60)
    assert RpcFailure.from_rpc_error(info.value).reason == "JOB_TOKEN_MISMATCH"
    # A job of another type answers no result and stores no file.
    create_and_dispatch(world.client("alpha"), "raw_outputs", {})
    other = raw.next_assignment(timeout=30)
    assert other.job.job_type_id == "raw_outputs"
    failure = refused(raw, other, [*artifact("page", "application/json", b"{}")])
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_OUTPUT")
    assert job_of(world, other.job.id).status == STATUS.JOB_STATUS_FAILED
    for assignment in (first, second):
        cancel(world, assignment.job.id)
