"""`/metrics`: counters that move by exactly what real calls and real jobs did,
the job queue read from the database at scrape time, and who may scrape
(GEOPERA_METRICS open, admin, off)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from geopera.v1 import catalog_pb2, processing_pb2
from tests.conftest import SAMPLES
from tests.jobs_support import STATUS, RawWorker, create_and_dispatch, running_world, struct, wait_terminal
from tests.support.client import RpcFailure
from tests.support.metrics import fetch, scrape, value
from tests.support.server import REPO, ServerProcess


@pytest.fixture(scope="module")
def metrics_world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("metrics"), workers=1) as world:
        yield world


def test_counters_move_by_what_calls_and_jobs_did(metrics_world):
    world = metrics_world
    base = world.server.http_url
    client = world.client("alpha")
    before = scrape(base)

    for _ in range(3):
        client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=next(iter(world.items.values()))))
    with pytest.raises(RpcFailure):
        client.execute("items.get", catalog_pb2.ItemsGetParams(item_id="itm_missing"))
    with pytest.raises(RpcFailure):  # an operation name the caller made up is counted as "other"
        client.execute("zz.made_up_name", catalog_pb2.ItemsGetParams())
    cog = create_and_dispatch(client, "test_cog", {"name": "metrics-cog", "steps": 1}).job
    # Fails its first attempt (retryable), succeeds on the second: one retry.
    flaky = create_and_dispatch(client, "test_fail", {"retryable": True, "succeed_from_attempt": 2}).job
    ended = [wait_terminal(client, cog.id), wait_terminal(client, flaky.id)]
    assert [job.status for job in ended] == [STATUS.JOB_STATUS_SUCCEEDED] * 2
    # Waits for nothing: no worker serves it before it is dispatched, so it stays PENDING.
    pending = client.execute(
        "processing.create",
        processing_pb2.ProcessingCreateParams(project_id="alpha", job_type_id="test_noop", input_params=struct({})),
    ).job
    time.sleep(1.1)  # past the database snapshot's 1 s reuse
    after = scrape(base)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("geopera_calls_total", rpc="Execute", operation="items.get", code="OK") == 3
    assert moved("geopera_calls_total", rpc="Execute", operation="items.get", code="NOT_FOUND") == 1
    assert moved("geopera_calls_total", rpc="Execute", operation="other", code="INVALID_ARGUMENT") == 1
    assert moved("geopera_call_duration_seconds_count", rpc="Execute", operation="items.get") == 4
    # Each succeeded job ends with one RegisterOutputs (the flaky one with no output).
    assert moved("geopera_calls_total", rpc="RegisterOutputs", operation="", code="OK") == 2
    assert not any("zz.made_up_name" in str(labels) for _, labels in after)
    # Credits: three holds; the cog captured its cost, the flaky job and its retry theirs.
    reserved = cog.credits_reserved + flaky.credits_reserved + pending.credits_reserved
    assert moved("geopera_credits_total", movement="reserved") == reserved
    charged = sum(job.credits_charged for job in ended)
    assert moved("geopera_credits_total", movement="captured") == charged
    assert moved("geopera_credits_total", movement="released") == sum(
        job.credits_reserved - job.credits_charged for job in ended
    )
    assert moved("geopera_job_retries_total", job_type="test_fail") == 1
    # Read from the database at scrape time (every replica agrees).
    assert value(after, "geopera_jobs", job_type="test_noop", status="PENDING") >= 1
    assert value(after, "geopera_jobs_oldest_age_seconds", job_type="test_noop", status="PENDING") >= 1.0
    assert value(after, "geopera_jobs", job_type="test_cog", status="RUNNING") == 0
    assert value(after, "geopera_stored_bytes", kind="asset") > 0
    assert ("geopera_job_leases_expired_total", frozenset()) in after


def test_an_expired_lease_counts_once_with_its_retry(metrics_world):
    world = metrics_world
    before = scrape(world.server.http_url)
    raw = RawWorker(world.channel, world.tokens["worker"], ["raw_only"])
    client = world.client("alpha")
    job = create_and_dispatch(client, "raw_only", {}).job
    assignment = raw.next_assignment(timeout=20)
    assert assignment.job.id == job.id
    assert assignment.traceparent == ""  # the server does not trace: nothing to join
    raw.die()  # silent from here: the lease (1.5 s) runs out, the job goes back to the queue
    deadline = time.monotonic() + 30
    while True:
        got = client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job.id)).job
        if got.attempt == 1 and got.status == STATUS.JOB_STATUS_DISPATCHED and "lost its lease" in got.message:
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.2)
    after = scrape(world.server.http_url)
    assert value(after, "geopera_job_leases_expired_total") - value(before, "geopera_job_leases_expired_total") == 1
    retries = value(after, "geopera_job_retries_total", job_type="raw_only")
    assert retries - value(before, "geopera_job_retries_total", job_type="raw_only") == 1
    client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id))


def test_analytics_pixels_and_seconds_by_method(metrics_world):
    world = metrics_world
    base = world.server.http_url
    before = scrape(base)
    item_id = world.items["s2l1c_slovenia_20150711_bgrn"]
    from google.protobuf import struct_pb2

    from geopera.v1 import analytics_pb2

    params = struct_pb2.Struct()
    params.update({"item_id": item_id, "band": 1, "geometry": _small_square()})
    result = world.client("alpha").execute(
        "analytics.execute", analytics_pb2.AnalyticsExecuteParams(operation="zonal_stats", params=params)
    )
    pixels = result.result["pixels_read"]
    after = scrape(base)
    assert pixels > 0
    got = value(after, "geopera_analytics_pixels_total", method="zonal_stats")
    assert got - value(before, "geopera_analytics_pixels_total", method="zonal_stats") == pixels
    assert value(after, "geopera_analytics_seconds_total", method="zonal_stats") > value(
        before, "geopera_analytics_seconds_total", method="zonal_stats"
    )


def _small_square() -> dict[str, object]:
    return json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())  # inside the Slovenia sample


def test_admin_mode_asks_an_admin_token_and_off_has_no_page(database_factory, tmp_path):
    from tests.conftest import World, seed_world

    server = ServerProcess(
        database_url=database_factory.create(), home=tmp_path / "admin", extra_env={"GEOPERA_METRICS": "admin"}
    ).start()
    try:
        world = World(server=server, database_url=server.database_url or "", home=tmp_path / "admin")
        import asyncio

        asyncio.run(seed_world(world))
        url = server.http_url + "/metrics"
        status, body, _ = fetch(url)
        assert status == 401 and '"UNAUTHENTICATED"' in body
        status, body, _ = fetch(url, "not-a-token")
        assert status == 401
        status, body, _ = fetch(url, world.tokens["alpha"])  # a user token, without the admin scope
        assert status == 403 and "PERMISSION_DENIED" in body
        samples = scrape(server.http_url, world.tokens["admin"])
        assert (
            value(samples, "geopera_calls_total", rpc="HTTP GET /metrics", operation="", code="PERMISSION_DENIED") == 1
        )
    finally:
        server.stop()

    off = ServerProcess(
        database_url=database_factory.create(), home=tmp_path / "off", extra_env={"GEOPERA_METRICS": "off"}
    ).start()
    try:
        assert fetch(off.http_url + "/metrics")[0] == 404
        assert fetch(off.http_url + "/healthz")[0] == 200
    finally:
        off.stop()


def test_an_unknown_metrics_mode_stops_the_server_at_once(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "geopera_kernel.server.cli", "serve", "--listen", "127.0.0.1:0"],
        cwd=REPO, env={"GEOPERA_METRICS": "public", "GEOPERA_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "GEOPERA_METRICS must be one of open, admin, off, not 'public'" in done.stderr
