"""Analytics as jobs (issue 13.6): a synchronous analytics.execute over more
pixels than GEOPERA_ANALYTICS_SYNC_MAX_PIXELS is refused RESOURCE_EXHAUSTED
USE_ANALYTICS_JOB before reading (and its validate-only estimate says so);
analytics.submit runs the same call as a job on a real worker, whose JSON result
and files are its artifacts, downloadable over gRPC and HTTP, equal to the
synchronous answer, and costing no credits. Against the real server and database;
tests/test_analytics_jobs_worker.py holds the worker-side attack tests."""

from __future__ import annotations

import contextlib
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from shapely.geometry import box, mapping, shape

from geopera.v1 import analytics_pb2, processing_pb2
from tests.conftest import SAMPLES, TEST_SERVER_ENV
from tests.jobs_support import (
    FAST_LEASES,
    STATUS,
    balance,
    ledger,
    start_world,
    struct,
    wait_for_job_type,
    wait_terminal,
)
from tests.support.client import RpcFailure
from tests.support.metrics import scrape, value
from tests.support.workers import WorkerProcess

SOURCE = "s2l1c_slovenia_20150711_bgrn"
AFTER = "s2l1c_slovenia_20150909_bgrn"
AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
# Above the pixels of a call over a small square, below those of the sample AOI.
SYNC_MAX_PIXELS = 200


def small_square() -> dict[str, Any]:
    """A square of a quarter of the AOI's side around its centre: a few dozen pixels."""
    outline = shape(AOI["features"][0]["geometry"]) if AOI.get("type") == "FeatureCollection" else shape(AOI)
    minx, miny, maxx, maxy = outline.bounds
    cx, cy = outline.centroid.x, outline.centroid.y
    half = min(maxx - minx, maxy - miny) / 8
    return dict(mapping(box(cx - half, cy - half, cx + half, cy + half)))


@pytest.fixture(scope="module")
def ana_world(database_factory, tmp_path_factory) -> Iterator[Any]:
    env = {**FAST_LEASES, **TEST_SERVER_ENV, "GEOPERA_ANALYTICS_SYNC_MAX_PIXELS": str(SYNC_MAX_PIXELS)}
    world = start_world(database_factory.create(), tmp_path_factory.mktemp("analytics_jobs"), env)
    # A real worker runs the analytics jobs (with the analytics plugins of TEST_SERVER_ENV), as
    # one on another host would: it downloads the sources with the job token (DownloadAsset).
    worker = None
    try:
        worker = WorkerProcess(world.server.address, world.tokens["worker"], world.home, name="remote",
                               extra_args=["--no-shared-storage"]).start()  # fmt: skip
        wait_for_job_type(world, "analytics")
        yield world
    finally:
        if worker is not None:
            worker.stop()
        assert world.channel is not None
        world.channel.close()
        world.server.stop()


def method_params(world, method: str, geometry: dict[str, Any]) -> dict[str, Any]:
    if method == "zonal_stats":
        return {"item_id": world.items[SOURCE], "index_name": "NDVI", "geometry": geometry}
    if method == "time_series":
        return {"item_ids": [world.items[SOURCE], world.items[AFTER]], "index_name": "NDVI", "geometry": geometry}
    return {"before_item_id": world.items[SOURCE], "after_item_id": world.items[AFTER], "index_name": "NDVI",
            "change_threshold": 0.05, "geometry": geometry}  # fmt: skip


def execute(world, method: str, params: dict[str, Any], *, validate_only: bool = False, token: str = "alpha"):
    request = analytics_pb2.AnalyticsExecuteParams(operation=method, params=struct(params))
    return world.client(token).execute("analytics.execute", request, validate_only=validate_only)


def submit(world, method: str, params: dict[str, Any], *, project: str = "alpha", token: str = "alpha", **md: Any):
    request = analytics_pb2.AnalyticsSubmitParams(operation=method, params=struct(params), project_id=project)
    return world.client(token).execute("analytics.submit", request, **md).job


def http(world, path: str, body: Any = None, token: str = "alpha") -> tuple[int, bytes, dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(world.server.http_url + path, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {world.tokens[token]}")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def artifact_rows(world) -> int:
    with psycopg.connect(world.database_url) as conn:
        return conn.execute("SELECT count(*) FROM artifacts").fetchone()[0]


def failure(call) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        call()
    return info.value


def test_a_call_over_the_limit_is_refused_before_reading_and_the_estimate_says_so(ana_world):
    params = method_params(ana_world, "change_detection", AOI)
    estimate = execute(ana_world, "change_detection", params, validate_only=True)
    assert estimate.pixels_to_read > SYNC_MAX_PIXELS
    assert estimate.exceeds_sync_max_pixels and estimate.sync_max_pixels == SYNC_MAX_PIXELS
    before = artifact_rows(ana_world)
    refused = failure(lambda: execute(ana_world, "change_detection", params))
    assert (refused.code.name, refused.reason) == ("RESOURCE_EXHAUSTED", "USE_ANALYTICS_JOB")
    assert refused.metadata["pixels_to_read"] == str(estimate.pixels_to_read)
    assert refused.metadata["sync_max_pixels"] == str(SYNC_MAX_PIXELS)
    assert "analytics.submit" in refused.message and artifact_rows(ana_world) == before
    # Over HTTP: 429 with the same reason.
    status, body, _ = http(ana_world, "/v1/op/analytics.execute", {"operation": "change_detection", "params": params})
    assert status == 429 and json.loads(body)["reason"] == "USE_ANALYTICS_JOB"
    small = execute(ana_world, "zonal_stats", method_params(ana_world, "zonal_stats", small_square()),
                    validate_only=True)  # fmt: skip
    assert 0 < small.pixels_to_read <= SYNC_MAX_PIXELS and not small.exceeds_sync_max_pixels


def download_result(world, job) -> dict[str, Any]:
    result = job.output_artifacts[0]
    assert (result.key, result.media_type, result.href) == ("result", "application/json", f"artifacts/{result.id}")
    data, _ = world.client("alpha").download(result.href)
    status, over_http, headers = http(world, f"/v1/artifacts/{result.id}")
    assert status == 200 and over_http == data and headers["Content-Type"].startswith("application/json")
    return json.loads(data)


@pytest.mark.parametrize("method", ["zonal_stats", "time_series", "change_detection"])
def test_a_job_answers_what_the_synchronous_call_answers(ana_world, method):
    params = method_params(ana_world, method, small_square())
    status, body, _ = http(ana_world, "/v1/op/analytics.execute", {"operation": method, "params": params})
    assert status == 200, body
    synchronous = json.loads(body)
    job = wait_terminal(ana_world.client("alpha"), submit(ana_world, method, params).id)
    assert job.status == STATUS.JOB_STATUS_SUCCEEDED, job.error
    assert job.job_type_id == "analytics" and job.credits_reserved == 0 and job.credits_charged == 0
    got = ana_world.client("alpha").execute(
        "processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job.id)
    )
    assert list(got.job.output_artifacts) == list(job.output_artifacts)
    answer = download_result(ana_world, job)
    assert answer["operation"] == synchronous["operation"] == method
    assert answer["result"] == synchronous["result"]
    # The same files (new ids): the result names the job's own artifacts, in the method's order.
    same_files = [
        {k: a[k] for k in ("key", "media_type", "size_bytes", "title")} for a in synchronous.get("outputs", [])
    ]
    assert [
        {k: a[k] for k in ("key", "media_type", "size_bytes", "title")} for a in answer.get("outputs", [])
    ] == same_files
    assert [a["id"] for a in answer.get("outputs", [])] == [a.id for a in job.output_artifacts[1:]]
    for artifact in job.output_artifacts[1:]:
        data, _ = ana_world.client("alpha").download(artifact.href)
        assert len(data) == artifact.size_bytes


def test_a_workers_answer_counts_in_the_servers_analytics_metrics(ana_world):
    """The worker ran the method, the server that committed its answer counts it: the
    pixels the answer reports, and seconds from the attempt's start to the commit."""
    base, client = ana_world.server.http_url, ana_world.client("alpha")
    before = scrape(base)
    job = wait_terminal(client, submit(ana_world, "zonal_stats", method_params(ana_world, "zonal_stats", AOI)).id)
    assert job.status == STATUS.JOB_STATUS_SUCCEEDED, job.error
    pixels = download_result(ana_world, job)["result"]["pixels_read"]
    after = scrape(base)
    counted = value(after, "geopera_analytics_pixels_total", method="zonal_stats")
    assert counted - value(before, "geopera_analytics_pixels_total", method="zonal_stats") == pixels > 0
    seconds = value(after, "geopera_analytics_seconds_total", method="zonal_stats")
    ran = (job.end_time.ToDatetime() - job.start_time.ToDatetime()).total_seconds()
    assert seconds - value(before, "geopera_analytics_seconds_total", method="zonal_stats") == pytest.approx(
        ran, abs=2e-3
    )


def test_a_job_over_the_synchronous_limit_runs_and_costs_no_credits(ana_world):
    client = ana_world.client("alpha")
    before = balance(client)
    job = wait_terminal(client, submit(ana_world, "zonal_stats", method_params(ana_world, "zonal_stats", AOI)).id)
    assert job.status == STATUS.JOB_STATUS_SUCCEEDED, job.error
    answer = download_result(ana_world, job)
    assert answer["result"]["pixels_read"] > SYNC_MAX_PIXELS
    after = balance(client)
    assert (after.available, after.held) == (before.available, before.held)
    assert [entry.amount for entry in ledger(client, job_id=job.id) if entry.amount] == []


def test_validate_only_checks_everything_and_creates_no_job(ana_world):
    with psycopg.connect(ana_world.database_url) as conn:
        jobs_before = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    request = analytics_pb2.AnalyticsSubmitParams(
        operation="zonal_stats", params=struct(method_params(ana_world, "zonal_stats", AOI)), project_id="alpha"
    )
    answered = ana_world.client("alpha").execute("analytics.submit", request, validate_only=True)
    assert answered.job.id == "" and answered.job.job_type_id == "analytics"
    with psycopg.connect(ana_world.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == jobs_before


def test_an_idempotency_key_answers_the_same_job(ana_world):
    params = method_params(ana_world, "zonal_stats", small_square())
    key = secrets.token_hex(8)
    first = submit(ana_world, "zonal_stats", params, idempotency_key=key)
    again = submit(ana_world, "zonal_stats", params, idempotency_key=key)
    assert first.id == again.id
    reused = failure(lambda: submit(ana_world, "zonal_stats", params | {"geometry": AOI}, idempotency_key=key))
    assert reused.reason == "IDEMPOTENCY_KEY_REUSED"
    wait_terminal(ana_world.client("alpha"), first.id)


@pytest.mark.parametrize(
    ("change", "code", "reason"),
    [
        ({"project": ""}, "INVALID_ARGUMENT", "PROJECT_ID_REQUIRED"),
        ({"project": "beta"}, "PERMISSION_DENIED", "PROJECT_ACCESS_DENIED"),
        ({"method": "nope"}, "INVALID_ARGUMENT", "UNKNOWN_ANALYTICS_OPERATION"),
        ({"params": {"geometry": AOI}}, "INVALID_ARGUMENT", "INVALID_ANALYTICS_PARAMS"),
        ({"item": "it_missing"}, "NOT_FOUND", "ITEM_NOT_FOUND"),
        # The job stores its params as JSON, which has no infinity (found by the fuzz tests).
        ({"method": "change_detection", "infinite": "change_threshold"}, "INVALID_ARGUMENT", "NON_FINITE_NUMBER"),
    ],
)
def test_errors_are_the_synchronous_calls(ana_world, change, code, reason):
    params = change.get("params") or method_params(ana_world, change.get("method", "zonal_stats"), small_square())
    if "infinite" in change:
        params = params | {change["infinite"]: float("inf")}
    if "item" in change:
        params = params | {"item_id": change["item"]}
    refused = failure(lambda: submit(ana_world, change.get("method", "zonal_stats"), params,
                                     project=change.get("project", "alpha")))  # fmt: skip
    assert (refused.code.name, refused.reason) == (code, reason)


def test_items_of_another_project_are_refused(ana_world, database_factory):
    # A token on both projects reads beta's item, but the job belongs to alpha.
    token = ana_world.make_token(scopes=["analytics:read"], projects=["alpha", "beta"])
    params = method_params(ana_world, "zonal_stats", small_square()) | {"item_id": ana_world.beta_items[SOURCE]}
    refused = failure(lambda: submit(ana_world, "zonal_stats", params, token=token))
    assert refused.reason == "SOURCE_IN_OTHER_PROJECT"


def test_no_processing_operation_makes_an_analytics_job(ana_world):
    # Only analytics.submit checks a method's params and the items they name; a batch once
    # priced such a request at 0 credits and failed INTERNAL on the ledger's amount check.
    client = ana_world.client("alpha")
    before = balance(client)
    input_params = struct({"operation": "time_series", "params": {}})
    request = processing_pb2.ProcessingCreateParams(
        project_id="alpha", job_type_id="analytics", input_params=input_params
    )
    refused = failure(lambda: client.execute("processing.create", request))
    assert refused.reason == "USE_ANALYTICS_SUBMIT"
    batch = [processing_pb2.BatchJobRequest(job_type_id=t, input_params=p)
             for t, p in (("clip", struct({})), ("analytics", input_params))]  # fmt: skip

    def create_batch(requests: list[Any], all_or_nothing: bool) -> processing_pb2.ProcessingCreateBatchResult:
        params = processing_pb2.ProcessingCreateBatchParams(
            project_id="alpha", requests=requests, all_or_nothing=all_or_nothing
        )
        return client.execute("processing.create_batch", params)

    whole = failure(lambda: create_batch(batch[1:], True))
    assert whole.reason == "USE_ANALYTICS_SUBMIT" and whole.metadata["request_index"] == "0"
    partial = create_batch(batch, False)
    assert [e.reason for e in partial.errors] == ["INVALID_JOB_PARAMS", "USE_ANALYTICS_SUBMIT"]
    assert partial.errors[1].field == "job_type_id" and partial.created_count == 0
    assert balance(client) == before


def test_a_cancelled_job_keeps_no_files(ana_world):
    client = ana_world.client("alpha")
    job = submit(ana_world, "change_detection", method_params(ana_world, "change_detection", AOI))
    with contextlib.suppress(RpcFailure):  # it may have finished already
        client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id))
    final = wait_terminal(client, job.id)
    if final.status == STATUS.JOB_STATUS_CANCELLED:
        assert list(final.output_artifacts) == []
        with psycopg.connect(ana_world.database_url) as conn:
            assert conn.execute("SELECT count(*) FROM artifacts WHERE job_id = %s", (job.id,)).fetchone()[0] == 0


def test_a_job_runs_on_a_worker_with_its_logs(ana_world):
    client = ana_world.client("alpha")
    job = submit(ana_world, "zonal_stats", method_params(ana_world, "zonal_stats", AOI))
    assert job.status == STATUS.JOB_STATUS_DISPATCHED and job.worker_id == ""
    assert job.credits_reserved == 0 and job.max_attempts > 1
    final = wait_terminal(client, job.id)
    assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
    # Disconnected ones too: under load the worker's last heartbeat may be older than the short lease.
    listed = processing_pb2.WorkersListParams(include_disconnected=True)
    workers = ana_world.client("admin").execute("workers.list", listed).workers
    assert final.worker_id in {worker.id for worker in workers}, (final.worker_id, workers)
    logs = client.execute("processing.jobs.logs", processing_pb2.ProcessingJobsLogsParams(job_id=job.id)).entries
    assert any("zonal_stats computed" in entry.message for entry in logs), [e.message for e in logs]


def test_a_method_error_fails_the_job_with_its_reason(ana_world):
    # Bands are resolved when the method runs: on the worker, not at submit.
    params = method_params(ana_world, "zonal_stats", small_square()) | {"band_mapping": {"red": 9, "nir": 10}}
    job = wait_terminal(ana_world.client("alpha"), submit(ana_world, "zonal_stats", params).id)
    assert job.status == STATUS.JOB_STATUS_FAILED and job.attempt == 1
    info = error_details_pb2.ErrorInfo()
    assert job.error.details[0].Unpack(info) and info.reason == "MISSING_BANDS", job.error
    synchronous = failure(lambda: execute(ana_world, "zonal_stats", params))
    assert synchronous.reason == "MISSING_BANDS" and synchronous.message in job.error.message


def test_a_plugin_method_runs_as_a_job_on_a_worker_that_loads_it(ana_world):
    params = {"item_id": ana_world.items[SOURCE]}
    synchronous = execute(ana_world, "pixel_count", params)
    job = wait_terminal(ana_world.client("alpha"), submit(ana_world, "pixel_count", params).id)
    assert job.status == STATUS.JOB_STATUS_SUCCEEDED, job.error
    assert download_result(ana_world, job)["result"] == json_format.MessageToDict(synchronous.result)
