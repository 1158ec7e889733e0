"""Hole 1 of the hardening issue, attacked through a real server and a real worker: raster input
is a trust boundary.

An upload is opened with an allow-list of drivers (GeoTIFF; JPEG 2000 too for conversion),
never following a label to another file of the server; a raster too large is refused before
any pixel is decoded; a cancelled registration abandons its conversion and leaves no file;
job sources are held to the same rules; no error names a server path.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import rasterio
from google.rpc import error_details_pb2
from rasterio.transform import from_origin

from geopera.v1 import catalog_pb2, processing_pb2
from geopera_kernel.raster import RASTER_WORK_CANCELLED, RasterError
from geopera_kernel.server.domain.raster_work import RasterWorkPool
from tests.conftest import SAMPLES, TEST_SERVER_ENV, World, seed_world
from tests.jobs_support import FAST_LEASES, STATUS, create_and_dispatch, wait_for_job_type, wait_terminal
from tests.support.client import RpcFailure
from tests.support.hostile_rasters import LABELS, SIDE, ers_label, sparse_geotiff
from tests.support.server import ServerProcess
from tests.support.workers import WorkerProcess
from tests.test_catalog import _alpha_item_count, _create, _fails, _storage_files

SAMPLE = SAMPLES / "s2l1c_slovenia_20150711_bgrn.tif"  # 100 x 101 pixels, 4 bands
WORKER_MAX_PIXELS = 1000  # below the sample: the worker refuses it as a source


@pytest.fixture(scope="module")
def trust_world(database_factory, tmp_path_factory) -> Iterator[World]:
    """A server whose raster pool has one thread, and a worker with a tiny raster limit."""
    home = tmp_path_factory.mktemp("trust")
    env = {**FAST_LEASES, **TEST_SERVER_ENV, "GEOPERA_RASTER_WORKERS": "1"}
    url = database_factory.create()
    server = ServerProcess(database_url=url, home=home, extra_env=env).start()
    world = World(server=server, database_url=url, home=home)
    worker = None
    try:
        asyncio.run(seed_world(world))
        world.channel = server.channel()
        worker = WorkerProcess(
            server.address, world.tokens["worker"], home, name="trust",
            extra_args=["--max-raster-pixels", str(WORKER_MAX_PIXELS)],
        ).start()  # fmt: skip
        wait_for_job_type(world, "bathymetry")
        yield world
    finally:
        if worker is not None:
            worker.stop()
        if world.channel is not None:
            world.channel.close()
        server.stop()


@pytest.fixture(scope="module")
def secret(trust_world) -> bytes:
    """A file of the server's own disk, outside its storage, that no client may read."""
    data = secrets.token_bytes(SIDE * SIDE)
    (trust_world.home / "secret.bin").write_bytes(data)
    return data


def _upload_target(world: World) -> str:
    """The secret as a path relative to where uploads are staged."""
    staging = world.home / "storage" / ".scratch" / "uploads"
    return os.path.relpath(world.home / "secret.bin", staging)


def _assert_no_path(world: World, failure: RpcFailure) -> None:
    text = " ".join([failure.message, *failure.metadata.values(), *(d for _, d in failure.violations)])
    assert str(world.home) not in text and "/storage/" not in text, text


def _stored_bytes(world: World) -> bytes:
    return b"".join(path.read_bytes() for path in _storage_files(world))


@pytest.mark.parametrize("convert", [False, True], ids=["register", "convert_to_cog"])
@pytest.mark.parametrize("kind", LABELS)
def test_a_label_naming_a_server_file_is_refused_and_none_of_it_comes_back(trust_world, secret, kind, convert):
    client = trust_world.client("alpha")
    before_items, before_files = _alpha_item_count(trust_world), _storage_files(trust_world)
    upload = client.upload("alpha", LABELS[kind](_upload_target(trust_world)))

    failure = _fails(lambda: _create(client, upload.upload_id, f"{kind}_20200101", convert_to_cog=convert))

    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_RASTER_FORMAT")
    assert failure.violations[0][0] == "assets[0]"
    _assert_no_path(trust_world, failure)
    assert _alpha_item_count(trust_world) == before_items
    assert _storage_files(trust_world) == before_files
    assert secret[:256] not in _stored_bytes(trust_world)


@pytest.mark.parametrize("convert", [False, True], ids=["register", "convert_to_cog"])
def test_a_sparse_20000_pixel_geotiff_is_refused_as_too_large(trust_world, tmp_path, convert):
    client = trust_world.client("alpha")
    before_items = _alpha_item_count(trust_world)
    bomb = sparse_geotiff(tmp_path / "bomb.tif")
    assert bomb.stat().st_size < 20_000
    upload = client.upload("alpha", bomb.read_bytes())

    failure = _fails(lambda: _create(client, upload.upload_id, "bomb_20200101", convert_to_cog=convert))

    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "RASTER_TOO_LARGE")
    assert "20000 x 20000" in failure.message
    assert _alpha_item_count(trust_world) == before_items


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"this is not a raster at all" * 100, "UNSUPPORTED_RASTER_FORMAT"),
        (SAMPLE.read_bytes()[: len(SAMPLE.read_bytes()) // 2], "UNREADABLE_RASTER"),
        (b"II*\x00\xff\xff\xff\x7fgarbage", "UNREADABLE_RASTER"),
    ],
    ids=["text", "truncated-cog", "tiff-garbage"],
)
@pytest.mark.parametrize("convert", [False, True], ids=["register", "convert_to_cog"])
def test_unreadable_uploads_are_refused_without_naming_a_server_path(trust_world, payload, reason, convert):
    client = trust_world.client("alpha")
    upload = client.upload("alpha", payload)
    failure = _fails(lambda: _create(client, upload.upload_id, "bad_20200101", convert_to_cog=convert))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    _assert_no_path(trust_world, failure)


def _noise_geotiff(path: Path) -> Path:
    """A striped GeoTIFF whose conversion takes a while (incompressible noise)."""
    data = np.random.default_rng(7).integers(1, 60_000, size=(2, 3072, 3072), dtype=np.uint16)
    with rasterio.open(
        path, "w", driver="GTiff", width=3072, height=3072, count=2, dtype="uint16",
        crs="EPSG:32633", transform=from_origin(465_000, 5_080_000, 10, 10),
    ) as dataset:  # fmt: skip
        dataset.write(data)
    return path


def test_a_conversion_whose_deadline_passes_is_abandoned_and_leaves_no_file(trust_world, tmp_path):
    client = trust_world.client("alpha")
    scratch = trust_world.home / "storage" / ".scratch"
    upload = client.upload("alpha", _noise_geotiff(tmp_path / "noise.tif").read_bytes(), chunk=1 << 20)
    name = f"noise_{secrets.token_hex(3)}_20200101"
    params = catalog_pb2.ItemsCreateParams(
        project_id="alpha",
        collection_id="uploads",
        name=name,
        assets=[catalog_pb2.AssetInput(key="data", upload_id=upload.upload_id)],
        convert_to_cog=True,
    )

    with pytest.raises(RpcFailure) as caught:
        client.execute("items.create", params, timeout=0.2)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED

    # The pool has one thread, so this call runs once the abandoned work has ended (and its
    # result has been discarded); the upload is still there to use.
    item = client.execute("items.create", params, timeout=120).item
    assert item.name == name
    leftovers = [path.name for path in scratch.iterdir() if path.name.startswith(("cog-", ".cog-"))]
    assert leftovers == []


# --- job sources --------------------------------------------------------------------------------


def _error_reason(status) -> str:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def test_a_clip_whose_stored_source_is_a_label_fails_with_the_format_reason(trust_world, secret):
    """A stored asset that did not pass today's checks (registered before them, or storage
    changed behind the catalog's back): the worker opens it with the same allow-list."""
    client = trust_world.client("alpha")
    upload = client.upload("alpha", SAMPLE.read_bytes())
    item = _create(client, upload.upload_id, f"tampered_{secrets.token_hex(3)}_20150711").item
    stored = trust_world.home / "storage" / "projects" / "alpha" / "items" / item.id / "data.tif"
    assert stored.is_file()
    stored.write_bytes(ers_label(os.path.relpath(trust_world.home / "secret.bin", stored.parent)))

    result = client.execute(
        "clip.create_from_item",
        processing_pb2.ClipCreateFromItemParams(project_id="alpha", source_item_id=item.id, aoi_geometry=item.geometry),
    )
    final = wait_terminal(client, result.job.id)

    assert final.status == STATUS.JOB_STATUS_FAILED
    assert _error_reason(final.error) == "UNSUPPORTED_RASTER_FORMAT", final.error
    assert str(trust_world.home) not in final.error.message
    assert list(final.output_item_ids) == []


def test_a_bathymetry_source_over_the_worker_limit_fails_as_too_large(trust_world):
    client = trust_world.client("alpha")
    source = trust_world.items["s2l1c_slovenia_20150711_bgrn"]
    job = create_and_dispatch(client, "bathymetry", {"source_item_id": source, "m0": 1.0, "m1": 10.0}).job
    final = wait_terminal(client, job.id)

    assert final.status == STATUS.JOB_STATUS_FAILED
    assert _error_reason(final.error) == "RASTER_TOO_LARGE", final.error
    assert "100 x 101 pixels" in final.error.message
    assert list(final.output_item_ids) == []


# --- the raster pool ----------------------------------------------------------------------------


def test_a_cancelled_call_stops_waiting_and_its_finished_work_is_discarded():
    async def scenario() -> None:
        pool = RasterWorkPool(workers=1)
        release = threading.Event()
        started = threading.Event()
        discarded: list[str] = []

        def slow(check_cancelled) -> str:
            started.set()
            release.wait(30)
            return "converted.tif"

        call = asyncio.ensure_future(pool.run(slow, discard=discarded.append))
        await asyncio.to_thread(started.wait, 30)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call  # returns while the work is still blocked
        assert not release.is_set() and discarded == []

        release.set()
        await pool.run(lambda check_cancelled: None)  # one thread: runs after `slow` ended
        await asyncio.sleep(0)  # the discard callback was scheduled before this call's result
        assert discarded == ["converted.tif"]

    asyncio.run(scenario())


def test_queued_work_of_a_cancelled_call_never_starts_and_running_work_stops_at_its_next_check():
    async def scenario() -> None:
        pool = RasterWorkPool(workers=1)
        release = threading.Event()
        started = threading.Event()
        ran: list[str] = []
        stopped: list[str] = []

        def blocking(check_cancelled) -> None:
            started.set()
            release.wait(30)
            try:
                check_cancelled()
            except RasterError as error:
                stopped.append(error.reason)
                raise

        running = asyncio.ensure_future(pool.run(blocking))
        await asyncio.to_thread(started.wait, 30)
        queued = asyncio.ensure_future(pool.run(lambda check_cancelled: ran.append("queued")))
        await asyncio.sleep(0)
        running.cancel()
        queued.cancel()
        for call in (running, queued):
            with pytest.raises(asyncio.CancelledError):
                await call
        release.set()
        await pool.run(lambda check_cancelled: None)
        assert ran == [] and stopped == [RASTER_WORK_CANCELLED]

    asyncio.run(scenario())
