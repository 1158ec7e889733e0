"""True failure reasons, fast (issue 10, hole 4), against a real server and
real worker processes with the default 15 s lease.

A job whose outputs the server refuses for what they are (a taken name, an
all-nodata raster) or whose plugin fails for good ends FAILED in its first
attempt, well within one lease, with the real code and reason in `job.error`
and its credits released; only transient faults (a failed attempt asking for
another, a server restart) are tried again. What can be known at create (a
taken output name, a malformed target collection) is refused there, before a
credit moves.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from geopera.v1 import processing_pb2
from tests.conftest import TEST_SERVER_ENV, World
from tests.jobs_support import (
    STATUS,
    balance,
    create_and_dispatch,
    ledger,
    start_world,
    struct,
    wait_for_job_type,
    wait_terminal,
)
from tests.support.client import RpcFailure
from tests.support.server import ServerProcess
from tests.support.workers import WorkerProcess

LEASE_SECONDS = 15.0  # the default; a job that waited out a single lease took longer than this
SERVER_ENV = {**TEST_SERVER_ENV, "GEOPERA_RETRY_BACKOFF_SECONDS": "0.1"}
SOURCE = "s2l1c_slovenia_20150711_bgrn"
AOI = {"type": "Polygon", "coordinates": [[[14.555, 45.868], [14.56, 45.868], [14.56, 45.872], [14.555, 45.872],
                                           [14.555, 45.868]]]}  # fmt: skip
RESERVE, CAPTURE, RELEASE = 2, 3, 4  # LedgerEntry kinds


@pytest.fixture(scope="module")
def world(database_factory, tmp_path_factory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("failures")
    state = start_world(database_factory.create(), home, SERVER_ENV)
    worker = None
    try:
        worker = WorkerProcess(state.server.address, state.tokens["worker"], home, name="failures").start()
        wait_for_job_type(state, "bathymetry")
        yield state
    finally:
        if worker is not None:
            worker.stop()
        assert state.channel is not None
        state.channel.close()
        state.server.stop()


def _run_to_end(client: Any, start: Callable[[], Any]) -> tuple[Any, float]:
    """Create a job, follow it to its end: (final job, seconds it took)."""
    began = time.monotonic()
    job = start().job
    final = wait_terminal(client, job.id, timeout=4 * LEASE_SECONDS)
    return final, time.monotonic() - began


def _error_reason(job: Any) -> str:
    for detail in job.error.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def _assert_failed_at_once(client: Any, final: Any, took: float, code: grpc.StatusCode, reason: str) -> None:
    assert final.status == STATUS.JOB_STATUS_FAILED, final
    assert (final.error.code, _error_reason(final)) == (code.value[0], reason), final.error
    assert final.attempt == 1, f"retried a permanent failure: {final.error.message}"
    assert took < LEASE_SECONDS, f"took {took:.1f} s: waited out a lease"
    assert final.credits_charged == 0 and not final.output_item_ids
    kinds = sorted((e.kind, e.amount) for e in ledger(client, job_id=final.id))
    assert kinds == [(RESERVE, final.credits_reserved), (RELEASE, final.credits_reserved)]


def _refused(call: Callable[[], Any]) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        call()
    return info.value


def _jobs(client: Any) -> list[str]:
    listed = client.execute("processing.jobs.list", processing_pb2.ProcessingJobsListParams(project_id="alpha"))
    return [job.id for job in listed.jobs]


# --- refused at create, before a credit moves ------------------------------------------------


def test_an_output_name_already_taken_is_refused_at_create_and_moves_no_credit(world):
    client = world.client("alpha")
    name = f"taken_{secrets.token_hex(3)}"
    params = processing_pb2.ClipCreateFromItemParams(
        source_item_id=world.items[SOURCE], project_id="alpha", aoi_geometry=struct(AOI), output_name=name
    )
    first = wait_terminal(client, client.execute("clip.create_from_item", params).job.id)
    assert first.status == STATUS.JOB_STATUS_SUCCEEDED, first.error

    before, entries, jobs = balance(client), len(ledger(client)), _jobs(client)
    refusals = [
        # the same output_name again, through clip and through the generic create
        _refused(lambda: client.execute("clip.create_from_item", params)),
        _refused(
            lambda: create_and_dispatch(
                client, "clip", {"source_item_id": world.items[SOURCE], "aoi_geometry": AOI, "output_name": name}
            )
        ),
        # another job type, another plugin default, the same collection
        _refused(
            lambda: client.execute(
                "processing.create_and_dispatch",
                processing_pb2.ProcessingCreateAndDispatchParams(
                    project_id="alpha",
                    job_type_id="bathymetry",
                    input_params=struct({"source_item_id": world.items[SOURCE], "m0": 1, "m1": 1, "output_name": name}),
                    target_collection_id="clip",
                ),
            )
        ),
    ]
    for refused in refusals:
        assert (refused.code, refused.reason) == (grpc.StatusCode.ALREADY_EXISTS, "OUTPUT_NAME_TAKEN"), refused
        assert name in refused.message and {k: refused.metadata[k] for k in ("collection_id", "name")} == {
            "collection_id": "clip",
            "name": name,
        }
    assert balance(client) == before and len(ledger(client)) == entries and _jobs(client) == jobs


def test_a_builtin_job_types_default_output_name_is_checked_at_create(world):
    client = world.client("alpha")
    source = "s2l1c_slovenia_20150830_bgrn"
    params = processing_pb2.ClipCreateFromItemParams(
        source_item_id=world.items[source], project_id="alpha", aoi_geometry=struct(AOI)
    )
    first = wait_terminal(client, client.execute("clip.create_from_item", params).job.id)
    assert first.status == STATUS.JOB_STATUS_SUCCEEDED, first.error
    before, entries = balance(client), len(ledger(client))

    refused = _refused(lambda: client.execute("clip.create_from_item", params))

    assert (refused.code, refused.reason) == (grpc.StatusCode.ALREADY_EXISTS, "OUTPUT_NAME_TAKEN")
    assert f"{source}_clip" in refused.message
    assert balance(client) == before and len(ledger(client)) == entries


@pytest.mark.parametrize("collection", ["no/slashes", "-leading-dash", "x" * 64, "naïve", "trailing\n"])
def test_a_malformed_target_collection_is_refused_at_create_and_moves_no_credit(world, collection):
    client = world.client("alpha")
    before, entries, jobs = balance(client), len(ledger(client)), _jobs(client)
    refused = _refused(
        lambda: client.execute(
            "processing.create_and_dispatch",
            processing_pb2.ProcessingCreateAndDispatchParams(
                project_id="alpha",
                job_type_id="test_cog",
                input_params=struct({"name": f"n_{secrets.token_hex(3)}"}),
                target_collection_id=collection,
            ),
        )
    )
    assert (refused.code, refused.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_COLLECTION_ID")
    assert [field for field, _ in refused.violations] == ["target_collection_id"]
    assert balance(client) == before and len(ledger(client)) == entries and _jobs(client) == jobs


# --- refused when the outputs arrive: FAILED at once, the real reason ------------------------


def test_outputs_named_like_an_existing_item_fail_the_job_at_once(world):
    client = world.client("alpha")
    name = f"twice_{secrets.token_hex(3)}"
    first, _ = _run_to_end(client, lambda: create_and_dispatch(client, "test_cog", {"name": name}))
    assert first.status == STATUS.JOB_STATUS_SUCCEEDED, first.error
    before = balance(client)

    # test_cog names its output from `name`, which the server cannot know is the output name.
    final, took = _run_to_end(client, lambda: create_and_dispatch(client, "test_cog", {"name": name}))

    _assert_failed_at_once(client, final, took, grpc.StatusCode.ALREADY_EXISTS, "OUTPUT_NAME_TAKEN")
    assert name in final.error.message
    assert balance(client) == before


def test_an_all_nodata_output_fails_the_job_at_once_as_empty(world):
    client = world.client("alpha")
    before = balance(client)
    # test_cog writes its pixels with `value`; 0 is its nodata, so no pixel is valid.
    final, took = _run_to_end(
        client, lambda: create_and_dispatch(client, "test_cog", {"name": f"empty_{secrets.token_hex(3)}", "value": 0})
    )
    _assert_failed_at_once(client, final, took, grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_OUTPUT")
    assert "no valid pixel" in final.error.message
    assert balance(client) == before
    listed = client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=final.id)).job
    assert listed.status == STATUS.JOB_STATUS_FAILED


def test_bathymetry_over_land_fails_at_once_as_empty_and_charges_nothing(world):
    client = world.client("alpha")
    before = balance(client)
    # The demo patch is grassland and forest: with the land mask on, not one water pixel.
    final, took = _run_to_end(
        client,
        lambda: create_and_dispatch(
            client, "bathymetry", {"source_item_id": world.items[SOURCE], "m0": 52.08, "m1": 54.9}
        ),
    )
    _assert_failed_at_once(client, final, took, grpc.StatusCode.ABORTED, "EMPTY_OUTPUT")
    assert "no water pixel" in final.error.message
    assert balance(client) == before


def test_a_plugins_permanent_error_fails_the_job_at_once_with_its_reason(world):
    client = world.client("alpha")
    before = balance(client)
    final, took = _run_to_end(
        client,
        lambda: create_and_dispatch(client, "test_fail", {"reason": "SOURCE_TOO_CLOUDY", "message": "97% cloud"}),
    )
    _assert_failed_at_once(client, final, took, grpc.StatusCode.ABORTED, "SOURCE_TOO_CLOUDY")
    assert final.error.message == "97% cloud"
    assert balance(client) == before


def test_a_raster_error_escaping_a_plugin_fails_the_job_at_once_with_its_reason(world):
    client = world.client("alpha")
    final, took = _run_to_end(
        client,
        lambda: create_and_dispatch(
            client, "test_fail", {"raster_error": "UNREADABLE_RASTER", "message": "truncated tile"}
        ),
    )
    _assert_failed_at_once(client, final, took, grpc.StatusCode.ABORTED, "UNREADABLE_RASTER")
    assert final.error.message == "truncated tile"


def test_a_failed_raster_write_is_tried_again(world):
    client = world.client("alpha")
    final, _ = _run_to_end(
        client, lambda: create_and_dispatch(client, "test_fail", {"raster_error": "COG_WRITE_FAILED"})
    )
    assert final.status == STATUS.JOB_STATUS_FAILED and final.attempt == final.max_attempts == 3


def test_a_transient_failure_is_still_tried_again(world):
    client = world.client("alpha")
    final, _ = _run_to_end(
        client, lambda: create_and_dispatch(client, "test_fail", {"retryable": True, "succeed_from_attempt": 2})
    )
    assert final.status == STATUS.JOB_STATUS_SUCCEEDED and final.attempt == 2


# --- a transient fault: the server restarts while the job runs --------------------------------


def test_outputs_sent_while_the_server_restarts_are_sent_again_and_the_job_succeeds(database_url, tmp_path):
    # A lease long enough to outlast the restart on a busy machine.
    env = {**SERVER_ENV, "GEOPERA_LEASE_SECONDS": "40"}
    world = start_world(database_url, tmp_path, env)
    worker = None
    restarted: ServerProcess | None = None
    try:
        worker = WorkerProcess(world.server.address, world.tokens["worker"], tmp_path, name="restart").start()
        wait_for_job_type(world, "test_cog")
        client = world.client("alpha")
        name = f"restart_{secrets.token_hex(3)}"
        # Runs about 2 s: the server is down when the worker sends its outputs.
        job = create_and_dispatch(client, "test_cog", {"name": name, "steps": 4, "step_seconds": 0.5}).job
        deadline = time.monotonic() + 10
        while _job(client, job.id).status != STATUS.JOB_STATUS_RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert world.channel is not None
        world.channel.close()
        world.server.stop(signal.SIGKILL)
        time.sleep(4)  # longer than the job's remaining steps, far shorter than its lease
        restarted = ServerProcess(
            database_url=database_url,
            home=tmp_path,
            extra_env=env,
            extra_args=["--listen", world.server.address],
        ).start()
        world.channel = restarted.channel()
        final = wait_terminal(world.client("alpha"), job.id, timeout=4 * LEASE_SECONDS)
        assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
        assert final.attempt == 1  # the same attempt: the outputs were sent again, not the job
        assert "sending again" in worker.log()
    finally:
        if worker is not None:
            worker.stop()
        if world.channel is not None:
            world.channel.close()
        if restarted is not None:
            restarted.stop()
        world.server.stop()


def _job(client: Any, job_id: str) -> Any:
    return client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job_id)).job
