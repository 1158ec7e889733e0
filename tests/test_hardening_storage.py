"""Hardening, storage and disk (issue 10, hole 7), against a real server, a
real PostgreSQL and real worker processes:

- stored bytes are deleted only when their transaction surely rolled back;
- the storage sweep (server and `geopera admin storage sweep`) removes old
  unreferenced objects and stale scratch, keeps referenced and young ones,
  and expires analytics artifacts after their retention;
- a worker's --workdir survives the worker;
- project storage quotas (QUOTA_EXCEEDED, nothing stored);
- UploadAsset checks the scope before reading a byte;
- open streams per token are capped, idle watches end resumably;
- input_params are capped and stored once, not in every event snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2

from geopera.v1 import analytics_pb2, catalog_pb2, kernel_pb2, processing_pb2, resources_pb2
from geopera_kernel.server.auth import USER_SCOPES
from geopera_kernel.server.storage import LocalStorage
from geopera_kernel.server.store import connect_database
from tests.conftest import SAMPLES, TEST_SERVER_ENV, World, start_seeded_world, stop_world
from tests.jobs_support import wait_for_job_type
from tests.support.client import RpcFailure
from tests.support.server import REPO
from tests.support.workers import WorkerProcess

MAX_STREAMS = 3
WATCH_IDLE_SECONDS = 2
ARTIFACT_RETENTION_SECONDS = 8
SERVER_ENV = {
    **TEST_SERVER_ENV,
    "GEOPERA_MAX_STREAMS_PER_TOKEN": str(MAX_STREAMS),
    "GEOPERA_WATCH_IDLE": f"{WATCH_IDLE_SECONDS}s",
    "GEOPERA_ARTIFACT_RETENTION": f"{ARTIFACT_RETENTION_SECONDS}s",
    "GEOPERA_SWEEP_INTERVAL": "1s",
    # The server's own sweeps keep objects younger than an hour; the CLI test
    # below sweeps with a shorter grace.
    "GEOPERA_STORAGE_GRACE": "1h",
}
AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())


@pytest.fixture(scope="module")
def world(database_factory, tmp_path_factory) -> Iterator[World]:
    state = start_seeded_world(database_factory.create(), tmp_path_factory.mktemp("storage-world"), SERVER_ENV)
    try:
        yield state
    finally:
        stop_world(state)


def storage_root(world: World) -> Path:
    return world.home / "storage"


def staging_dir(world: World) -> Path:
    return storage_root(world) / ".scratch" / "uploads"


def staged_files(world: World) -> set[str]:
    path = staging_dir(world)
    return {p.name for p in path.iterdir()} if path.exists() else set()


def admin(world: World, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
    env.update({"GEOPERA_HOME": str(world.home), "GEOPERA_DATABASE_URL": world.database_url})
    result = subprocess.run(
        [sys.executable, "-m", "geopera_kernel.server.cli", "admin", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def struct(value: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def put(path: Path, data: bytes, *, age_seconds: float = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if age_seconds:
        age(path, age_seconds)
    return path


# -- the commit helper: delete only on a sure rollback -------------------------------


def test_stored_bytes_are_deleted_only_when_the_transaction_surely_rolled_back(database_url, tmp_path):
    from geopera_kernel.server.domain.pending_objects import PendingObjects

    async def scenario() -> dict[str, tuple[bool, bool, str]]:
        db = await connect_database(database_url, min_size=1, max_size=2)
        storage = LocalStorage(tmp_path / "storage")
        source = put(tmp_path / "source.tif", b"bytes")
        outcomes: dict[str, tuple[bool, bool, str]] = {}
        async with db.transaction() as conn:
            await conn.execute(
                "CREATE TABLE probe_deferred (id int CONSTRAINT probe_deferred_key UNIQUE DEFERRABLE "
                "INITIALLY DEFERRED)"
            )

        async def attempt(name: str, body) -> None:  # type: ignore[no-untyped-def]
            pending = PendingObjects(storage)
            key = f"projects/p/items/it_{name}/data.tif"
            error = ""
            deleted = False
            try:
                await pending.put(key, source)
                async with db.transaction(pending.probe) as conn:
                    await body(conn)
                await post_commit(name)
            except Exception as exc:
                error = type(exc).__name__
                deleted = await pending.settle(exc)
            outcomes[name] = (deleted, storage.exists(key), error)

        async def post_commit(name: str) -> None:
            if name == "failure-after-commit":
                raise RuntimeError("the response could not be encoded")

        async def fails_in_body(conn) -> None:  # type: ignore[no-untyped-def]
            await conn.execute("SELECT 1")
            raise RuntimeError("a validation failed before COMMIT")

        async def connection_dies_before_commit(conn) -> None:  # type: ignore[no-untyped-def]
            pid = (await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone())["pid"]
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as killer:
                # With a timeout, returns once the backend has exited.
                await killer.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))

        async def commit_refused(conn) -> None:  # type: ignore[no-untyped-def]
            await conn.execute("INSERT INTO probe_deferred VALUES (1), (1)")  # checked at COMMIT

        async def commits(conn) -> None:  # type: ignore[no-untyped-def]
            await conn.execute("SELECT 1")

        try:
            await attempt("fails-in-body", fails_in_body)
            await attempt("connection-lost-at-commit", connection_dies_before_commit)
            await attempt("commit-refused", commit_refused)
            await attempt("failure-after-commit", commits)
        finally:
            await db.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    # COMMIT never sent: nothing can reference the bytes.
    assert outcomes["fails-in-body"] == (True, False, "RuntimeError")
    # COMMIT sent, answer lost: the rows may exist, so the bytes stay (the sweep decides later).
    deleted, exists, error = outcomes["connection-lost-at-commit"]
    assert (deleted, exists) == (False, True) and error in ("AdminShutdown", "OperationalError"), error
    # COMMIT answered with a rollback (a deferred unique key): surely nothing committed.
    assert outcomes["commit-refused"] == (True, False, "UniqueViolation")
    # Committed: the rows name the bytes, whatever fails afterwards.
    assert outcomes["failure-after-commit"] == (False, True, "RuntimeError")


# -- the sweep -----------------------------------------------------------------------


def test_the_sweep_removes_old_orphans_and_stale_scratch_and_keeps_the_rest(world):
    root = storage_root(world)
    client = world.client("alpha")
    item_id = world.items["s2l1c_slovenia_20150711_bgrn"]
    referenced = root / "projects" / "alpha" / "items" / item_id / "data.tif"
    assert referenced.is_file()
    age(referenced, 2 * 86400)
    old_orphan = put(root / "projects/alpha/items/it_orphan/data.tif", b"orphan", age_seconds=1800)
    old_artifact_orphan = put(root / "projects/alpha/artifacts/art_orphan.png", b"png", age_seconds=1800)
    young_orphan = put(root / "projects/alpha/items/it_young/data.tif", b"young")
    stale_dir = root / ".scratch" / "outputs-job_dead-x1"
    put(stale_dir / "0-data.tif", b"half", age_seconds=1800)
    age(stale_dir, 1800)
    stale_staged = put(staging_dir(world) / "up_crashed", b"partial", age_seconds=1800)
    fresh_scratch = put(root / ".scratch" / "put-fresh", b"in progress")
    upload = client.upload("alpha", b"x" * 1000)  # a live upload, waiting for items.create
    live_staged = staging_dir(world) / upload.upload_id
    age(live_staged, 1800)

    removed = admin(world, "storage", "sweep", "--grace", "10m")

    assert set(removed["orphan_objects"]) == {
        "projects/alpha/items/it_orphan/data.tif",
        "projects/alpha/artifacts/art_orphan.png",
    }
    assert set(removed["stale_scratch"]) == {"outputs-job_dead-x1", "uploads/up_crashed"}
    assert not old_orphan.exists() and not old_artifact_orphan.exists()
    assert not stale_dir.exists() and not stale_staged.exists()
    assert referenced.is_file() and young_orphan.is_file() and fresh_scratch.is_file() and live_staged.is_file()
    body, _ = client.download(f"items/{item_id}/assets/data")
    assert body == referenced.read_bytes()
    # The young orphan goes once it is older than the grace.
    age(young_orphan, 1800)
    assert admin(world, "storage", "sweep", "--grace", "10m")["orphan_objects"] == [
        "projects/alpha/items/it_young/data.tif"
    ]


def test_expired_artifacts_are_removed_rows_and_bytes(world):
    before = world.items["s2l1c_slovenia_20150711_bgrn"]
    after = world.items["s2l1c_slovenia_20150909_bgrn"]
    client = world.client("alpha")
    params = {"before_item_id": before, "after_item_id": after, "index_name": "NDVI", "change_threshold": 0.05}
    result = client.execute(
        "analytics.execute",
        analytics_pb2.AnalyticsExecuteParams(operation="change_detection", params=struct({**params, "geometry": AOI})),
        timeout=120,
    )
    assert len(result.outputs) == 2
    files = {o.id: list((storage_root(world) / "projects/alpha/artifacts").glob(f"{o.id}.*")) for o in result.outputs}
    assert all(len(paths) == 1 for paths in files.values()), files
    deadline = time.monotonic() + ARTIFACT_RETENTION_SECONDS + 60
    while True:
        try:
            client.download(result.outputs[0].href)
        except RpcFailure as failure:
            assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "ARTIFACT_NOT_FOUND")
            break
        assert time.monotonic() < deadline, "the artifact outlived its retention"
        time.sleep(0.5)
    deadline = time.monotonic() + 30
    while any(path.exists() for paths in files.values() for path in paths):
        assert time.monotonic() < deadline, "the artifact's bytes outlived its row"
        time.sleep(0.2)
    with pytest.raises(RpcFailure) as info:
        client.download(result.outputs[1].href)
    assert info.value.reason == "ARTIFACT_NOT_FOUND"


# -- the worker's workdir ------------------------------------------------------------


def test_a_worker_removes_only_its_private_folder_in_the_workdir(world, tmp_path):
    workdir = tmp_path / "work"
    mine = put(workdir / "notes.txt", b"the user's file")
    worker = WorkerProcess(
        world.server.address, world.tokens["worker"], tmp_path, name="workdir", extra_args=["--workdir", str(workdir)]
    ).start()
    try:
        wait_for_job_type(world, "test_noop")
        private = [p for p in workdir.iterdir() if p.name.startswith("geopera-worker-")]
        assert len(private) == 1 and private[0].is_dir(), list(workdir.iterdir())
    finally:
        assert worker.stop() == 0
    assert mine.read_bytes() == b"the user's file"
    assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt"]


# -- quotas --------------------------------------------------------------------------


def project_usage(world: World, project_id: str) -> int:
    with psycopg.connect(world.database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(sum(a.size_bytes), 0) FROM assets a JOIN items i ON i.id = a.item_id "
            "        WHERE i.project_id = %(p)s)"
            " + (SELECT coalesce(sum(size_bytes), 0) FROM artifacts WHERE project_id = %(p)s)"
            " + (SELECT coalesce(sum(size_bytes), 0) FROM uploads WHERE project_id = %(p)s"
            "    AND consume_time IS NULL AND expire_time > now())",
            {"p": project_id},
        ).fetchone()
    assert row is not None
    return int(row[0])


def stored_objects(world: World, project_id: str) -> set[str]:
    base = storage_root(world) / "projects" / project_id
    return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}


def test_a_project_storage_quota_refuses_uploads_and_items_and_stores_nothing(world):
    client = world.client("beta")
    sample = (SAMPLES / "s2l1c_slovenia_20150731_bgrn.tif").read_bytes()
    used = project_usage(world, "beta")
    objects = stored_objects(world, "beta")
    staged = staged_files(world)
    try:
        admin(world, "project", "set-quota", "beta", str(used + len(sample) - 1))
        # Declared too large: refused on the first message.
        with pytest.raises(RpcFailure) as info:
            client.upload("beta", sample)
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
        # Undeclared size: refused when the bytes pass the quota.
        with pytest.raises(RpcFailure) as info:
            client.upload("beta", sample, sha256="", chunk=16 << 10, file_name="undeclared.tif")
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
        assert staged_files(world) == staged
        assert project_usage(world, "beta") == used

        # Registration: the upload fits, then the quota shrinks below what the item needs.
        admin(world, "project", "set-quota", "beta", str(used + len(sample)))
        upload = client.upload("beta", sample)
        admin(world, "project", "set-quota", "beta", str(used + len(sample) - 1))
        with pytest.raises(RpcFailure) as info:
            client.execute(
                "items.create",
                catalog_pb2.ItemsCreateParams(
                    project_id="beta",
                    collection_id="quota",
                    name="s2l1c_slovenia_20150731_bgrn",
                    assets=[catalog_pb2.AssetInput(key="data", upload_id=upload.upload_id)],
                ),
            )
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
        assert stored_objects(world, "beta") == objects
        # Within the quota the same upload registers.
        admin(world, "project", "set-quota", "beta", str(used + len(sample)))
        item = client.execute(
            "items.create",
            catalog_pb2.ItemsCreateParams(
                project_id="beta",
                collection_id="quota",
                name="s2l1c_slovenia_20150731_bgrn",
                assets=[catalog_pb2.AssetInput(key="data", upload_id=upload.upload_id)],
            ),
        ).item
        assert item.assets["data"].size_bytes == len(sample)
    finally:
        admin(world, "project", "set-quota", "beta", "default")


def test_analytics_artifacts_count_against_the_quota(world):
    artifacts = storage_root(world) / "projects" / "alpha" / "artifacts"
    before = set(artifacts.iterdir()) if artifacts.exists() else set()
    params = {
        "before_item_id": world.items["s2l1c_slovenia_20150711_bgrn"],
        "after_item_id": world.items["s2l1c_slovenia_20150909_bgrn"],
        "index_name": "NDVI",
        "change_threshold": 0.05,
        "geometry": AOI,
    }
    try:
        admin(world, "project", "set-quota", "alpha", str(project_usage(world, "alpha")))
        with pytest.raises(RpcFailure) as info:
            world.client("alpha").execute(
                "analytics.execute",
                analytics_pb2.AnalyticsExecuteParams(operation="change_detection", params=struct(params)),
                timeout=120,
            )
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
        assert (set(artifacts.iterdir()) if artifacts.exists() else set()) == before
        # A call that stores nothing still runs.
        world.client("alpha").execute(
            "analytics.execute",
            analytics_pb2.AnalyticsExecuteParams(
                operation="zonal_stats",
                params=struct({"item_id": params["before_item_id"], "index_name": "NDVI", "geometry": AOI}),
            ),
        )
    finally:
        admin(world, "project", "set-quota", "alpha", "default")


def test_job_outputs_over_the_quota_are_refused_and_not_stored(world, tmp_path):
    import numpy as np

    from geopera.v1 import worker_pb2
    from geopera_kernel.raster import write_cog
    from tests.jobs_support import RawWorker, create_and_dispatch, job_metadata
    from tests.support.job_plugins import SQUARE

    path = tmp_path / "out.tif"
    write_cog(path, np.full((1, 64, 64), 7, dtype=np.uint8), crs="EPSG:4326",
              transform=(0.01 / 64, 0, 14.55, 0, -0.01 / 64, 45.87), nodata=0, descriptions=["value"])  # fmt: skip
    data = path.read_bytes()
    objects = stored_objects(world, "beta")
    raw = RawWorker(world.channel, world.tokens["worker"], ["raw_quota"])
    client = world.client("beta")
    job = None
    try:
        admin(world, "project", "set-quota", "beta", str(project_usage(world, "beta") + len(data) - 1))
        job = create_and_dispatch(client, "raw_quota", {}, project="beta").job
        assignment = raw.next_assignment(timeout=30)
        item = worker_pb2.OutputItem(output_key="0", name="over_quota", geometry=struct(SQUARE),
                                     assets=[worker_pb2.OutputAsset(key="data", size_bytes=len(data))])  # fmt: skip
        chunk = worker_pb2.OutputChunk(output_key="0", asset_key="data", data=data, finish_write=True)
        with pytest.raises(grpc.RpcError) as info:
            raw.stub.RegisterOutputs(
                iter([
                    worker_pb2.RegisterOutputsRequest(job_id=job.id, item=item),
                    worker_pb2.RegisterOutputsRequest(chunk=chunk),
                    worker_pb2.RegisterOutputsRequest(commit=True),
                ]),
                metadata=job_metadata(assignment.job_token),
                timeout=60,
            )  # fmt: skip
        failure = RpcFailure.from_rpc_error(info.value)
        assert (failure.code, failure.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
        assert stored_objects(world, "beta") == objects
        # A full quota would refuse every attempt: the job fails at once, with that reason.
        ended = client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job.id)).job
        assert ended.status == resources_pb2.JOB_STATUS_FAILED and ended.attempt == 1
        info_detail = error_details_pb2.ErrorInfo()
        assert ended.error.details[0].Unpack(info_detail)
        assert (ended.error.code, info_detail.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], "QUOTA_EXCEEDED")
    finally:
        raw.die()
        admin(world, "project", "set-quota", "beta", "default")
        if job is not None:
            with contextlib.suppress(RpcFailure):  # the job may have ended already
                client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id))


# -- upload scope, stream caps, idle watches -------------------------------------------


class HeldUpload:
    """An UploadAsset stream that sends `first` (if any), then waits for release."""

    def __init__(self, world: World, token: str, first: kernel_pb2.UploadAssetRequest | None) -> None:
        self.release = threading.Event()
        self._first = first
        client = world.client(token)
        self.future = client.stub.UploadAsset.future(self._requests(), metadata=client.metadata(), timeout=60)

    def _requests(self) -> Iterator[kernel_pb2.UploadAssetRequest]:
        if self._first is not None:
            yield self._first
        self.release.wait(60)

    def failure(self, timeout: float) -> RpcFailure:
        try:
            self.future.result(timeout=timeout)
        except grpc.RpcError as err:
            return RpcFailure.from_rpc_error(err)
        raise AssertionError("the upload succeeded")

    def close(self) -> None:
        self.release.set()
        self.future.cancel()


def test_an_upload_without_the_write_scope_fails_before_any_byte_is_read(world):
    reader = world.make_token(scopes=["catalog:read"], projects=["alpha"])
    staged = staged_files(world)
    held = HeldUpload(world, reader, None)  # not even a first message
    try:
        assert staged_files(world) == staged
        failure = held.failure(timeout=20)
        assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE")
    finally:
        held.close()
    assert staged_files(world) == staged
    # Another project's token: refused on the first message, nothing staged.
    with pytest.raises(RpcFailure) as info:
        world.client("beta").upload("alpha", b"y" * 100_000)
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert staged_files(world) == staged


def test_open_streams_per_token_are_capped(world):
    token = world.make_token(scopes=list(USER_SCOPES), projects=["alpha"])
    client = world.client(token)
    asset = f"items/{world.items['s2l1c_slovenia_20150711_bgrn']}/assets/data"
    first = kernel_pb2.UploadAssetRequest(project_id="alpha", file_name="held.tif", data=b"z" * 10)
    held = [HeldUpload(world, token, first) for _ in range(MAX_STREAMS)]
    try:
        deadline = time.monotonic() + 30
        while True:
            # A download may take a slot while the uploads start: reopen any refused upload.
            for index, upload in enumerate(held):
                if upload.future.done():
                    upload.close()
                    held[index] = HeldUpload(world, token, first)
            try:
                client.download(asset)
            except RpcFailure as failure:
                assert (failure.code, failure.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
                break
            assert time.monotonic() < deadline, f"a token held {MAX_STREAMS + 1} streams at once"
            time.sleep(0.1)
        # The cap is per token: another token of the project still downloads.
        world.client("alpha").download(asset)
    finally:
        for upload in held:
            upload.close()
    deadline = time.monotonic() + 20
    while True:  # the server notices the ends of the streams
        try:
            body, _ = client.download(asset)
            break
        except RpcFailure as failure:
            assert failure.reason == "TOO_MANY_STREAMS" and time.monotonic() < deadline
            time.sleep(0.1)
    assert body


def watch_failure(world: World, job_id: str, after: int) -> tuple[list[kernel_pb2.WatchJobResponse], RpcFailure]:
    client = world.client("alpha")
    events = []
    try:
        for event in client.stub.WatchJob(
            kernel_pb2.WatchJobRequest(job_id=job_id, after_sequence=after), metadata=client.metadata(), timeout=30
        ):
            events.append(event)
    except grpc.RpcError as err:
        return events, RpcFailure.from_rpc_error(err)
    raise AssertionError(f"the watch ended without a status after {len(events)} events")


def pending_clip_job(world: World) -> resources_pb2.Job:
    """A clip job of project alpha, created and left PENDING (no worker runs clip here)."""
    params = processing_pb2.ProcessingCreateParams(
        project_id="alpha",
        job_type_id="clip",
        input_params=struct({"source_item_id": world.items["s2l1c_slovenia_20150711_bgrn"], "aoi_geometry": AOI}),
    )
    return world.client("alpha").execute("processing.create", params).job


def test_an_idle_watch_ends_with_a_status_to_resume_from(world):
    job = pending_clip_job(world)  # no worker: nothing happens to it
    events, failure = watch_failure(world, job.id, 0)
    assert [e.event_type for e in events] == ["snapshot"]
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "WATCH_IDLE")
    assert failure.metadata["after_sequence"] == str(events[0].sequence)
    events, failure = watch_failure(world, job.id, events[0].sequence)
    assert events == [] and failure.reason == "WATCH_IDLE"


def test_the_sdk_resumes_idle_watches_until_the_job_ends(world):
    from geopera_sdk import Client, RetryPolicy

    job = pending_clip_job(world)
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.05, max_backoff=0.1, total_timeout=None)
    with Client(world.server.address, world.tokens["alpha"], retries=policy) as sdk:
        watch = sdk.jobs.watch(job.id, timeout=60)
        assert next(watch).event_type == "snapshot"
        events: list[str] = []
        reader = threading.Thread(target=lambda: events.extend(e.event_type for e in watch))
        reader.start()
        try:
            deadline = time.monotonic() + 40
            while watch.resumes <= policy.max_attempts:  # more idle ends than attempts allowed for failures
                assert reader.is_alive() and time.monotonic() < deadline, (watch.resumes, events)
                time.sleep(0.2)
            world.client("alpha").execute(
                "processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id)
            )
        finally:
            reader.join(30)
    assert events == ["cancelled"]


# -- input_params ----------------------------------------------------------------------


def polygon(vertices: int) -> dict:
    ring = [
        [14.5 + 0.01 * math.cos(2 * math.pi * i / vertices), 45.9 + 0.01 * math.sin(2 * math.pi * i / vertices)]
        for i in range(vertices)
    ]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def test_input_params_are_capped_and_stored_once_not_in_every_event(world):
    client = world.client("alpha")
    source = world.items["s2l1c_slovenia_20150711_bgrn"]
    with pytest.raises(RpcFailure) as info:
        client.execute(
            "processing.create",
            processing_pb2.ProcessingCreateParams(
                project_id="alpha",
                job_type_id="clip",
                input_params=struct({"source_item_id": source, "aoi_geometry": polygon(4000)}),
            ),
        )
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INPUT_TOO_LARGE")
    assert info.value.violations[0][0] == "input_params"

    params = {"source_item_id": source, "aoi_geometry": polygon(1000)}
    job = client.execute(
        "processing.create_and_dispatch",
        processing_pb2.ProcessingCreateAndDispatchParams(
            project_id="alpha", job_type_id="clip", input_params=struct(params)
        ),
    ).job
    client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id))
    with psycopg.connect(world.database_url) as conn:
        snapshots = conn.execute(
            "SELECT snapshot FROM job_events WHERE job_id = %s ORDER BY sequence", (job.id,)
        ).fetchall()
    assert len(snapshots) >= 3
    assert all("input_params" not in row[0] for row in snapshots)
    events, _ = watch_failure_or_end(world, job.id)
    assert [e.event_type for e in events][-1] == "cancelled"
    # Every event still carries the job's input_params.
    for event in events:
        assert json_format.MessageToDict(event.job.input_params) == json.loads(json.dumps(params))


def watch_failure_or_end(world: World, job_id: str) -> tuple[list[kernel_pb2.WatchJobResponse], None]:
    client = world.client("alpha")
    events = list(
        client.stub.WatchJob(
            kernel_pb2.WatchJobRequest(job_id=job_id, after_sequence=1), metadata=client.metadata(), timeout=30
        )
    )
    return events, None


# -- geometry work off the event loop ----------------------------------------------


def test_client_geometries_are_parsed_off_the_event_loop(database_url, tmp_path, monkeypatch):
    """Every parse of a client geometry (the costly part, with the area and
    intersection work that follows it) happens on a worker thread, never on the
    thread running the event loop, whichever call brings the geometry in."""
    import geopera_kernel.raster.geo
    from geopera_kernel.server.app import register_builtin_job_types
    from geopera_kernel.server.demo import SYSTEM, sample_items
    from geopera_kernel.server.domain.clip import ClipRequest, create_clip_job
    from geopera_kernel.server.domain.jobs import JobCreate
    from geopera_kernel.server.domain.models import ItemQuery
    from tests.conftest import _services

    parsed_on_loop: list[str] = []
    parsed_off_loop: list[str] = []
    parse = geopera_kernel.raster.geo._geometry

    def recording_parse(value, path, *, repair):  # type: ignore[no-untyped-def]
        try:
            asyncio.get_running_loop()
            parsed_on_loop.append(path)
        except RuntimeError:
            parsed_off_loop.append(path)
        return parse(value, path, repair=repair)

    async def scenario() -> None:
        services = await _services(database_url, tmp_path)
        # From here on (building the services validated the methods' own examples).
        monkeypatch.setattr(geopera_kernel.raster.geo, "_geometry", recording_parse)
        try:
            await register_builtin_job_types(services.jobs)
            await services.catalog.create_project("geo", "Geo")
            await services.credits.grant("geo", 100, "test")
            spec = sample_items(SAMPLES)[0]
            item = await services.catalog.create_item(SYSTEM, dataclasses.replace(spec, project_id="geo"))
            listed, _ = await services.catalog.list_items(
                SYSTEM, ItemQuery("geo", None, None, None, None, 10, "", intersects=AOI)
            )
            assert [i.id for i in listed] == [item.id]
            await services.jobs.create(
                SYSTEM,
                JobCreate("geo", "clip", {"source_item_id": item.id, "aoi_geometry": AOI}, "clips"),
                dispatch=False,
            )
            request = ClipRequest(item.id, "geo", AOI, [], "", "")
            await create_clip_job(SYSTEM, services.catalog, services.jobs, request)
            await services.analytics.execute(
                SYSTEM, "zonal_stats", {"item_id": item.id, "index_name": "NDVI", "geometry": AOI}
            )
        finally:
            await services.db.close()

    asyncio.run(scenario())
    assert parsed_on_loop == []
    parsed = {path.split(".features")[0] for path in parsed_off_loop}
    assert {"intersects", "input_params.aoi_geometry", "aoi_geometry", "params.geometry"} <= parsed
