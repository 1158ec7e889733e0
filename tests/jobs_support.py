"""Shared pieces of the processing tests: a server with short leases, real
worker processes, and a raw worker session (for tests that must hold a job
token themselves)."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import rasterio
import rasterio.mask
import rasterio.warp
from google.protobuf import struct_pb2
from shapely.geometry import box, mapping, shape

from geopera.v1 import credits_pb2, kernel_pb2, processing_pb2, resources_pb2, worker_pb2, worker_pb2_grpc
from tests.conftest import SAMPLES, TEST_SERVER_ENV, World, start_seeded_world
from tests.support.workers import WorkerProcess

FAST_LEASES = {
    "GEOPERA_LEASE_SECONDS": "1.5",
    "GEOPERA_HEARTBEAT_SECONDS": "0.3",
    "GEOPERA_RETRY_BACKOFF_SECONDS": "0.1",
}
STATUS = resources_pb2.JobStatus


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def start_world(database_url: str, home: Path, env: dict[str, str] | None = None) -> World:
    """A seeded world with short leases (or the server environment `env`)."""
    return start_seeded_world(database_url, home, env if env is not None else {**FAST_LEASES, **TEST_SERVER_ENV})


def wait_for_job_type(world: World, job_type_id: str, workers: int = 1, timeout: float = 30) -> None:
    """Until `workers` connected workers declare the type."""
    client = world.client("alpha")
    deadline = time.monotonic() + timeout
    while True:
        listed = client.execute("processing.job_types.list", processing_pb2.ProcessingJobTypesListParams())
        if any(t.job_type_id == job_type_id and t.connected_workers >= workers for t in listed.job_types):
            return
        assert time.monotonic() < deadline, f"fewer than {workers} workers declared {job_type_id}"
        time.sleep(0.1)


def start_workers(world: World, count: int, *, capacity: int = 2, grace: float = 30.0) -> list[WorkerProcess]:
    workers: list[WorkerProcess] = []
    try:
        for i in range(count):
            workers.append(
                WorkerProcess(world.server.address, world.tokens["worker"], world.home, capacity=capacity,
                              name=f"w{i}", grace=grace).start()
            )  # fmt: skip
        wait_for_job_type(world, "test_cog", workers=count)
    except BaseException:
        for worker in workers:  # never leave processes behind a failed fixture
            worker.stop()
        raise
    return workers


@contextlib.contextmanager
def running_world(database_url: str, home: Path, workers: int = 0, *, capacity: int = 2) -> Iterator[World]:
    """A seeded world with `workers` real worker processes, torn down after."""
    world = start_world(database_url, home)
    started: list[WorkerProcess] = []
    try:
        started = start_workers(world, workers, capacity=capacity) if workers else []
        yield world
    finally:
        for worker in started:
            worker.stop()
        assert world.channel is not None
        world.channel.close()
        world.server.stop()


def create_and_dispatch(client: Any, job_type_id: str, params: dict[str, Any], project: str = "alpha", **md: str):
    return client.execute(
        "processing.create_and_dispatch",
        processing_pb2.ProcessingCreateAndDispatchParams(
            project_id=project, job_type_id=job_type_id, input_params=struct(params)
        ),
        **md,
    )


def watch(client: Any, job_id: str, after: int = 0, timeout: float = 60) -> list[kernel_pb2.WatchJobResponse]:
    return list(
        client.stub.WatchJob(
            kernel_pb2.WatchJobRequest(job_id=job_id, after_sequence=after), metadata=client.metadata(), timeout=timeout
        )
    )


def wait_terminal(client: Any, job_id: str, timeout: float = 60) -> resources_pb2.Job:
    events = watch(client, job_id, timeout=timeout)
    job = events[-1].job
    assert job.status in (STATUS.JOB_STATUS_SUCCEEDED, STATUS.JOB_STATUS_FAILED, STATUS.JOB_STATUS_CANCELLED)
    return job


def balance(client: Any, project: str = "alpha") -> resources_pb2.CreditBalance:
    return client.execute("credits.balance.get", credits_pb2.CreditsBalanceGetParams(project_id=project)).balance


def ledger(client: Any, project: str = "alpha", job_id: str = "") -> list[resources_pb2.LedgerEntry]:
    entries, token = [], ""
    while True:
        page = client.execute(
            "credits.ledger.list",
            credits_pb2.CreditsLedgerListParams(project_id=project, job_id=job_id, page_size=1000, page_token=token),
        )
        entries += page.entries
        token = page.next_page_token
        if not token:
            return entries


def ledger_sums(entries: list[resources_pb2.LedgerEntry]) -> dict[str, int]:
    sums = {"grant": 0, "reserve": 0, "capture": 0, "release": 0, "waive": 0}
    names = {1: "grant", 2: "reserve", 3: "capture", 4: "release", 5: "waive"}
    for entry in entries:
        sums[names[entry.kind]] += entry.amount
    return sums


class RawWorker:
    """A worker session driven by the test itself over the real WorkerService,
    so the test holds the job tokens (a real worker never reveals them)."""

    def __init__(
        self,
        channel: grpc.Channel,
        token: str,
        job_types: list[str | worker_pb2.JobTypeDeclaration],
        capacity: int = 1,
        worker_id: str = "",
    ) -> None:
        self.stub = worker_pb2_grpc.WorkerServiceStub(channel)
        self._outbound: queue.Queue[worker_pb2.ConnectRequest | None] = queue.Queue()
        self.assignments: queue.Queue[worker_pb2.JobAssignment] = queue.Queue()
        self.cancels: queue.Queue[str] = queue.Queue()
        self.welcome: worker_pb2.WorkerWelcome | None = None
        self.error: grpc.RpcError | None = None  # how the server ended the session, if it did
        self.ended = threading.Event()
        self.heartbeating = True
        self.active: set[str] = set()
        declarations = [
            t
            if isinstance(t, worker_pb2.JobTypeDeclaration)
            else worker_pb2.JobTypeDeclaration(job_type_id=t, input_schema=struct({"type": "object"}))
            for t in job_types
        ]
        hello = worker_pb2.WorkerHello(
            name="raw-test-worker", capacity=capacity, job_types=declarations, worker_id=worker_id
        )
        self._outbound.put(worker_pb2.ConnectRequest(hello=hello))
        self._call = self.stub.Connect(self._requests(), metadata=[("authorization", f"Bearer {token}")])
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._beater = threading.Thread(target=self._beat, daemon=True)
        self._beater.start()
        deadline = time.monotonic() + 10
        while self.welcome is None:
            assert time.monotonic() < deadline, "no welcome"
            time.sleep(0.02)

    def _requests(self) -> Iterator[worker_pb2.ConnectRequest]:
        while (message := self._outbound.get()) is not None:
            yield message

    def _read(self) -> None:
        try:
            for response in self._call:
                kind = response.WhichOneof("message")
                if kind == "welcome":
                    self.welcome = response.welcome
                elif kind == "assignment":
                    self.active.add(response.assignment.job.id)
                    self.assignments.put(response.assignment)
                elif kind == "cancel":
                    self.cancels.put(response.cancel.job_id)
        except grpc.RpcError as err:
            self.error = err
        finally:
            self.ended.set()

    def _beat(self) -> None:
        while self.heartbeating:
            time.sleep(0.2)
            if self.heartbeating:
                beat = worker_pb2.WorkerHeartbeat(active_job_ids=sorted(self.active))
                self._outbound.put(worker_pb2.ConnectRequest(heartbeat=beat))

    def next_assignment(self, timeout: float = 10) -> worker_pb2.JobAssignment:
        return self.assignments.get(timeout=timeout)

    def die(self) -> None:
        """Stop heartbeating and drop the connection, like a killed process."""
        self.heartbeating = False
        self._call.cancel()
        self._outbound.put(None)


def declaration_of(world: World, job_type_id: str) -> worker_pb2.JobTypeDeclaration:
    """The declaration a real worker made, so a raw worker can run the same type
    without changing its published schema."""
    job_type = (
        world.client("alpha")
        .execute("processing.job_types.get", processing_pb2.ProcessingJobTypesGetParams(job_type_id=job_type_id))
        .job_type
    )
    return worker_pb2.JobTypeDeclaration(
        job_type_id=job_type.job_type_id,
        description=job_type.description,
        input_schema=job_type.input_schema,
        cost_model=job_type.cost_model,
    )


def job_metadata(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def dumps(message: Any) -> str:
    from google.protobuf import json_format

    return json.dumps(json_format.MessageToDict(message), indent=1)


def assert_clip_is_rasterio_mask(output) -> None:
    """`output` equals rasterio.mask of the sample under the sample AOI, reprojected
    by rasterio.warp (not by the code under test)."""
    aoi = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())["features"][0]["geometry"]
    with rasterio.open(SAMPLES / "s2l1c_slovenia_20150711_bgrn.tif") as src, rasterio.open(output) as out:
        footprint = shape(rasterio.warp.transform_geom(src.crs, "EPSG:4326", mapping(box(*src.bounds))))
        zone = rasterio.warp.transform_geom("EPSG:4326", src.crs, mapping(shape(aoi).intersection(footprint)))
        expected, transform = rasterio.mask.mask(src, [zone], crop=True)
        assert out.transform == transform and out.crs == src.crs
        assert np.array_equal(out.read(), expected)
