"""Two server replicas on one PostgreSQL with one S3 bucket (moto's real S3 API server),
two real workers: jobs and analytics through both replicas; then one replica is killed
(SIGKILL) mid-run, and its jobs still finish and a watch resumes on the other replica
from where it broke off."""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import json_format

from geopera.v1 import analytics_pb2, catalog_pb2, kernel_pb2
from geopera_kernel.raster.s3_endpoint import GDAL_ENDPOINT_VARIABLES
from tests.conftest import SAMPLES, TEST_SERVER_ENV, World, start_seeded_world, stop_world
from tests.jobs_support import FAST_LEASES, STATUS, create_and_dispatch, struct, wait_for_job_type, wait_terminal
from tests.support.client import KernelClient
from tests.support.s3 import MotoServer
from tests.support.server import ServerProcess
from tests.support.workers import WorkerProcess

BUCKET = "replicas"
SOURCE = "s2l1c_slovenia_20150711_bgrn"
AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())


class Replicas:
    def __init__(self, a: World, b: ServerProcess, moto: MotoServer, workers: list[WorkerProcess]) -> None:
        self.a = a
        self.workers = workers
        self.b = b
        self.moto = moto
        self.b_channel = grpc.insecure_channel(b.address)

    def client(self, replica: str) -> KernelClient:
        channel = self.a.channel if replica == "a" else self.b_channel
        assert channel is not None
        return KernelClient(channel, self.a.tokens["alpha"])


@pytest.fixture(scope="module")
def replicas(database_factory, tmp_path_factory) -> Iterator[Replicas]:
    home = tmp_path_factory.mktemp("replicas")
    moto = MotoServer(home).start()
    a = None
    b = None
    workers: list[WorkerProcess] = []
    try:
        moto.create_bucket(BUCKET)
        env = {**FAST_LEASES, **TEST_SERVER_ENV, **moto.env(BUCKET)}
        with pytest.MonkeyPatch.context() as patch:
            for name in GDAL_ENDPOINT_VARIABLES:  # set by S3Storage; restored after
                patch.delenv(name, raising=False)
            for name, value in moto.env(BUCKET).items():
                patch.setenv(name, value)
            a = start_seeded_world(database_factory.create(), home / "a", env)
        b = ServerProcess(database_url=a.database_url, home=home / "b", extra_env=env).start(timeout=180)
        # Each worker knows both replicas (as behind a load balancer): it talks to its first
        # and moves to the other when that one is gone.
        targets = [f"ipv4:{a.server.address},{b.address}", f"ipv4:{b.address},{a.server.address}"]
        for index, target in enumerate(targets):
            workers.append(WorkerProcess(target, a.tokens["worker"], home, capacity=2, name=f"r{index}").start())
        wait_for_job_type(a, "test_cog", workers=2, timeout=120)
        yield Replicas(a, b, moto, workers)
    finally:
        for worker in workers:
            worker.stop()
        if b is not None:
            b.stop()
        if a is not None:
            stop_world(a)
        moto.stop()


def _cog_job(client: KernelClient, source: str, step_seconds: float = 0.0):
    params = {"name": f"rep_{secrets.token_hex(4)}", "source_item_ids": [source], "steps": 4,
              "step_seconds": step_seconds}  # fmt: skip
    return create_and_dispatch(client, "test_cog", params).job


def _zonal(client: KernelClient, item_id: str) -> dict:
    params = {"item_id": item_id, "index_name": "NDVI", "geometry": AOI, "percentiles": [50]}
    result = client.execute(
        "analytics.execute", analytics_pb2.AnalyticsExecuteParams(operation="zonal_stats", params=struct(params))
    )
    return json_format.MessageToDict(result.result)


def test_jobs_and_analytics_through_both_replicas_then_one_dies(replicas):
    source = replicas.a.items[SOURCE]
    a, b = replicas.client("a"), replicas.client("b")
    # Both replicas answer the same, from the same bucket.
    assert _zonal(a, source)["zones"] == _zonal(b, source)["zones"]
    quick = [_cog_job(a, source), _cog_job(b, source), _cog_job(a, source), _cog_job(b, source)]
    for job in quick:
        final = wait_terminal(b, job.id)
        assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
        item = b.execute("items.get", catalog_pb2.ItemsGetParams(item_id=final.output_item_ids[0])).item
        assert f"geopera/projects/alpha/items/{item.id}/data.tif" in replicas.moto.keys(BUCKET)
        assert len(a.download(item.assets["data"].href)[0]) == item.assets["data"].size_bytes

    # Slow jobs, a watch on replica A; A is killed while they run.
    slow = [_cog_job(a, source, step_seconds=1.0) for _ in range(4)]
    seen: list[kernel_pb2.WatchJobResponse] = []
    broken: list[grpc.RpcError] = []
    started = threading.Event()

    def watch_on_a() -> None:
        try:
            for event in a.stub.WatchJob(kernel_pb2.WatchJobRequest(job_id=slow[0].id), metadata=a.metadata(),
                                         timeout=120):  # fmt: skip
                seen.append(event)
                if event.job.status == STATUS.JOB_STATUS_RUNNING:
                    started.set()
        except grpc.RpcError as err:
            broken.append(err)
        finally:
            started.set()

    watcher = threading.Thread(target=watch_on_a, daemon=True)
    watcher.start()
    assert started.wait(60)
    replicas.a.server.stop(signal.SIGKILL)
    watcher.join(30)
    assert broken and broken[0].code() == grpc.StatusCode.UNAVAILABLE, "the watch on the killed replica ended"
    assert seen and seen[-1].job.status != STATUS.JOB_STATUS_SUCCEEDED

    # The watch resumes on B after the last event seen, nothing repeated, to the end.
    resumed = list(b.stub.WatchJob(kernel_pb2.WatchJobRequest(job_id=slow[0].id, after_sequence=seen[-1].sequence),
                                   metadata=b.metadata(), timeout=180))  # fmt: skip
    sequences = [e.sequence for e in seen + resumed]
    assert sequences == sorted(set(sequences)), sequences  # increasing, nothing twice
    assert resumed[-1].job.status == STATUS.JOB_STATUS_SUCCEEDED
    finished = [wait_terminal(b, job.id, timeout=180) for job in slow]
    for final in finished:
        assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
        assert len(final.output_item_ids) == 1
    # The worker that talked to A lost it, went over to B, and finished jobs there.
    log = replicas.workers[0].log()
    assert "lost (UNAVAILABLE)" in log
    first_worker_id = log.split('"connected as ')[1].split('"')[0]
    assert any(final.worker_id == first_worker_id for final in finished)
    # Every output is one stored object; no staged upload is left behind. A staged object
    # is deleted right after its job's commit, in the same RegisterOutputs call, so a job
    # may be seen finished a moment before: wait for the deletes, briefly.
    deadline = time.monotonic() + 10
    while (staged := replicas.moto.keys(BUCKET, "geopera/projects/alpha/uploads/")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not staged
    # Analytics still answer on the surviving replica.
    assert _zonal(b, source)["zones"]
