"""Worker processes that die or stop, jobs queued with no worker, and two
server replicas sharing one database."""

from __future__ import annotations

import secrets
import signal
import time

import pytest

from geopera.v1 import catalog_pb2, kernel_pb2, processing_pb2
from tests.jobs_support import (
    FAST_LEASES,
    STATUS,
    assert_clip_is_rasterio_mask,
    balance,
    create_and_dispatch,
    ledger,
    start_world,
    wait_for_job_type,
    wait_terminal,
    watch,
)
from tests.support.client import KernelClient
from tests.support.server import ServerProcess
from tests.support.workers import WorkerProcess


def _get(client, job_id):
    return client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job_id)).job


def _wait_status(client, job_id, status, timeout=30):
    deadline = time.monotonic() + timeout
    while (job := _get(client, job_id)).status != status:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


@pytest.fixture
def world(database_url, tmp_path):
    world = start_world(database_url, tmp_path)
    yield world
    world.channel.close()
    world.server.stop()


def test_a_job_waits_for_a_capable_worker_then_runs(world):
    client = world.client("alpha")
    # No worker has declared any test type yet: only the built-in clip exists.
    job = client.execute(
        "processing.create_and_dispatch",
        processing_pb2.ProcessingCreateAndDispatchParams(
            project_id="alpha",
            job_type_id="clip",
            input_params=_clip_params(world),
        ),
    )
    assert job.dispatch.accepted
    assert "no connected worker" in job.dispatch.message
    time.sleep(0.5)
    assert _get(client, job.job.id).status == STATUS.JOB_STATUS_DISPATCHED
    worker = WorkerProcess(world.server.address, world.tokens["worker"], world.home).start()
    try:
        final = wait_terminal(client, job.job.id)
        assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
    finally:
        worker.stop()


def _clip_params(world):
    import json

    from tests.conftest import SAMPLES
    from tests.jobs_support import struct

    aoi = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
    return struct({"source_item_id": world.items["s2l1c_slovenia_20150711_bgrn"], "aoi_geometry": aoi})


def test_a_sigkilled_worker_s_job_completes_on_another_worker_once(world):
    client = world.client("alpha")
    first = WorkerProcess(world.server.address, world.tokens["worker"], world.home, name="doomed").start()
    wait_for_job_type(world, "test_cog")
    before = balance(client)
    source = world.items["s2l1c_slovenia_20150711_bgrn"]
    name = f"survivor_{secrets.token_hex(3)}"
    job = create_and_dispatch(
        client, "test_cog", {"name": name, "source_item_ids": [source], "steps": 20, "step_seconds": 0.1}
    ).job
    running = _wait_status(client, job.id, STATUS.JOB_STATUS_RUNNING)
    doomed_worker = running.worker_id
    first.kill()
    second = WorkerProcess(world.server.address, world.tokens["worker"], world.home, name="rescuer").start()
    try:
        events = watch(client, job.id)
        final = events[-1].job
        assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
        assert final.attempt == 2 and final.worker_id != doomed_worker
        assert "retrying" in [e.event_type for e in events]
        # Exactly one set of outputs, registered once.
        assert len(final.output_item_ids) == 1
        named = client.execute("items.list", catalog_pb2.ItemsListParams(project_id="alpha", collection_id="test_cog"))
        assert [i.name for i in named.items].count(name) == 1
        # Credits charged once: one reserve, one capture.
        kinds = sorted(e.kind for e in ledger(client, job_id=job.id))
        assert kinds == [2, 3]
        assert balance(client).held == before.held
    finally:
        second.stop()


def test_sigterm_lets_a_job_finish_and_hands_back_what_cannot(world):
    client = world.client("alpha")
    # The grace leaves the quick job seconds to spare on a loaded machine; the slow one needs far more.
    worker = WorkerProcess(world.server.address, world.tokens["worker"], world.home, grace=5.0).start()
    wait_for_job_type(world, "test_cog")
    quick = create_and_dispatch(client, "test_cog", {"name": "quick", "steps": 3, "step_seconds": 0.3}).job
    slow = create_and_dispatch(client, "test_cog", {"name": "slow", "steps": 100, "step_seconds": 0.1}).job
    _wait_status(client, quick.id, STATUS.JOB_STATUS_RUNNING)
    _wait_status(client, slow.id, STATUS.JOB_STATUS_RUNNING)
    assert worker.stop(signal.SIGTERM) == 0
    assert _get(client, quick.id).status == STATUS.JOB_STATUS_SUCCEEDED
    handed_back = _get(client, slow.id)
    assert handed_back.status == STATUS.JOB_STATUS_DISPATCHED and not handed_back.worker_id
    assert handed_back.attempt == 0  # a hand-back does not use up an attempt
    assert "handed back" in handed_back.message
    rescuer = WorkerProcess(world.server.address, world.tokens["worker"], world.home).start()
    try:
        assert wait_terminal(client, slow.id).status == STATUS.JOB_STATUS_SUCCEEDED
    finally:
        rescuer.stop()


def test_a_watcher_on_one_replica_follows_a_job_run_through_another(database_url, tmp_path):
    world = start_world(database_url, tmp_path / "a")
    replica_b = ServerProcess(database_url=database_url, home=tmp_path / "a", extra_env=FAST_LEASES)
    replica_b.log_path = tmp_path / "b.log"
    replica_b.port_file = tmp_path / "b.port"
    replica_b.start()
    worker = WorkerProcess(world.server.address, world.tokens["worker"], world.home).start()
    channel_b = replica_b.channel()
    try:
        wait_for_job_type(world, "test_cog")
        on_a = world.client("alpha")
        on_b = KernelClient(channel_b, world.tokens["alpha"])
        job = create_and_dispatch(on_a, "test_cog", {"name": "across", "steps": 5, "step_seconds": 0.2}).job
        seen_b = watch(on_b, job.id)
        assert seen_b[-1].job.status == STATUS.JOB_STATUS_SUCCEEDED
        # B saw the same persisted events A replays (B's first message was the snapshot).
        replay_a = watch(on_a, job.id, after=seen_b[0].sequence)
        assert [(e.sequence, e.event_type) for e in seen_b[1:]] == [(e.sequence, e.event_type) for e in replay_a]
        assert [e.sequence for e in seen_b] == list(range(seen_b[0].sequence, seen_b[-1].sequence + 1))

        # Resume on B after the third event: only what came later is replayed.
        cut = seen_b[2].sequence
        resumed = watch(on_b, job.id, after=cut)
        assert [e.sequence for e in resumed] == [e.sequence for e in seen_b if e.sequence > cut]
        assert resumed[0].event_type != "snapshot"
        # Resuming at the end of a finished job repeats nothing: the stream just ends.
        assert watch(on_b, job.id, after=seen_b[-1].sequence) == []
    finally:
        channel_b.close()
        worker.stop()
        replica_b.stop()
        world.channel.close()
        world.server.stop()


def test_a_slow_watcher_does_not_hold_up_the_job_or_other_watchers(world):
    worker = WorkerProcess(world.server.address, world.tokens["worker"], world.home).start()
    try:
        wait_for_job_type(world, "test_cog")
        client = world.client("alpha")
        job = create_and_dispatch(client, "test_cog", {"name": "watched", "steps": 30, "step_seconds": 0.02}).job
        stub = client.stub
        slow = stub.WatchJob(kernel_pb2.WatchJobRequest(job_id=job.id), metadata=client.metadata(), timeout=60)
        first = next(slow)  # then read nothing for a while
        fast = watch(client, job.id)
        assert fast[-1].job.status == STATUS.JOB_STATUS_SUCCEEDED
        assert _get(client, job.id).status == STATUS.JOB_STATUS_SUCCEEDED
        # The slow watcher, read only now, still gets every event in order.
        everything = [e.sequence for e in [first, *slow]]
        assert everything == list(range(everything[0], everything[-1] + 1))
        assert everything[-len(fast) :] == [e.sequence for e in fast]
    finally:
        worker.stop()


def test_a_worker_without_shared_storage_downloads_its_sources(world, tmp_path):
    """A worker on another host cannot open the server's storage paths: it
    downloads the job's sources with its job token, and the clip still
    matches the source exactly."""
    client = world.client("alpha")
    remote = WorkerProcess(world.server.address, world.tokens["worker"], tmp_path / "remote", name="remote",
                           extra_args=["--no-shared-storage"]).start()  # fmt: skip
    try:
        wait_for_job_type(world, "clip")
        result = client.execute(
            "clip.create_from_item",
            processing_pb2.ClipCreateFromItemParams(
                source_item_id=world.items["s2l1c_slovenia_20150711_bgrn"], project_id="alpha",
                aoi_geometry=_clip_params(world).fields["aoi_geometry"].struct_value,
            ),
        )  # fmt: skip
        final = wait_terminal(client, result.job.id)
        assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
        downloads = [line for line in world.server.log().splitlines() if '"rpc":"DownloadAsset"' in line]
        assert downloads and all('"code":"OK"' in line for line in downloads)
        assert any(f'"principal":"job:{result.job.id}:' in line for line in downloads)
        # The downloaded source was clipped exactly: the pixels rasterio.mask gives.
        item = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=final.output_item_ids[0])).item
        body, _ = client.download(item.assets["data"].href)
        (tmp_path / "clip.tif").write_bytes(body)
        assert_clip_is_rasterio_mask(tmp_path / "clip.tif")
    finally:
        remote.stop()
