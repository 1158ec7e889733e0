"""A server storing in S3 (GEOPERA_STORAGE_URL on moto's real S3 API server) with a real
worker: uploads and registration land in the bucket, a clip job's worker reads its source
and writes its output by presigned URLs (never through the server), analytics and tiles
read the objects in place (/vsis3/), downloads stream from the bucket with Range, and
the presigned-upload door refuses what is not the job's own."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import json_format

from geopera.v1 import analytics_pb2, catalog_pb2, processing_pb2, worker_pb2
from geopera_kernel.raster.s3_endpoint import GDAL_ENDPOINT_VARIABLES
from tests.conftest import SAMPLES, TEST_SERVER_ENV, World, start_seeded_world, stop_world
from tests.jobs_support import (
    FAST_LEASES,
    STATUS,
    RawWorker,
    assert_clip_is_rasterio_mask,
    create_and_dispatch,
    job_metadata,
    start_workers,
    struct,
    wait_terminal,
)
from tests.support.client import RpcFailure
from tests.support.http_downloads import fetch, sign
from tests.support.s3 import MotoServer

SOURCE = "s2l1c_slovenia_20150711_bgrn"
AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
BUCKET = "geopera-test"
DOWNLOAD_CALL = '"rpc":"DownloadAsset"'  # its access log line
SQUARE = {"type": "Polygon", "coordinates": [[[14.55, 45.86], [14.56, 45.86], [14.56, 45.87], [14.55, 45.87],
                                              [14.55, 45.86]]]}  # fmt: skip


class S3World:
    def __init__(self, world: World, moto: MotoServer) -> None:
        self.world = world
        self.moto = moto

    def keys(self, prefix: str = "") -> list[str]:
        return self.moto.keys(BUCKET, "geopera/" + prefix)


@pytest.fixture(scope="module")
def s3(database_factory, tmp_path_factory) -> Iterator[S3World]:
    home = tmp_path_factory.mktemp("s3world")
    moto = MotoServer(home).start()
    world = None
    workers = []
    try:
        moto.create_bucket(BUCKET)
        env = moto.env(BUCKET)
        # The seeding in this process stores through the same bucket; the workers get
        # no AWS variable at all (only presigned URLs).
        with pytest.MonkeyPatch.context() as patch:
            for name in GDAL_ENDPOINT_VARIABLES:  # set by S3Storage; restored after
                patch.delenv(name, raising=False)
            for name, value in env.items():
                patch.setenv(name, value)
            world = start_seeded_world(database_factory.create(), home, {**FAST_LEASES, **TEST_SERVER_ENV, **env})
        workers = start_workers(world, 1)
        yield S3World(world, moto)
    finally:
        for worker in workers:
            worker.stop()
        if world is not None:
            stop_world(world)
        moto.stop()


def _item(world: World, item_id: str):
    return world.client("alpha").execute("items.get", catalog_pb2.ItemsGetParams(item_id=item_id)).item


def test_stored_bytes_live_in_the_bucket_not_on_disk(s3):
    world = s3.world
    keys = s3.keys("projects/alpha/items/")
    assert len(keys) >= len(world.items)
    assert not (world.home / "storage").exists() or not any((world.home / "storage").rglob("*.tif"))
    # An upload registered as an item goes to the bucket too.
    client = world.client("alpha")
    data = (SAMPLES / f"{SOURCE}.tif").read_bytes()
    upload = client.upload("alpha", data, file_name="up.tif", chunk=1 << 20)
    params = catalog_pb2.ItemsCreateParams(project_id="alpha", name=f"up_{secrets.token_hex(3)}")
    params.assets.add(key="data", upload_id=upload.upload_id)
    item = client.execute("items.create", params).item
    assert f"geopera/projects/alpha/items/{item.id}/data.tif" in s3.moto.keys(BUCKET)
    body, first = client.download(item.assets["data"].href)
    assert body == data and first.sha256 == hashlib.sha256(data).hexdigest()


def test_a_clip_job_reads_and_writes_by_presigned_urls(s3, tmp_path):
    world = s3.world
    client = world.client("alpha")
    before_log = world.server.log().count(DOWNLOAD_CALL)
    name = f"s3clip_{secrets.token_hex(3)}"
    params = processing_pb2.ClipCreateFromItemParams(source_item_id=world.items[SOURCE], project_id="alpha",
                                                     output_name=name)  # fmt: skip
    params.aoi_geometry.CopyFrom(struct(AOI))
    job = client.execute("clip.create_from_item", params).job
    final = wait_terminal(client, job.id)
    assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
    item = _item(world, final.output_item_ids[0])
    assert f"geopera/projects/alpha/items/{item.id}/data.tif" in s3.moto.keys(BUCKET)
    # Neither the source nor the output went through the server: no DownloadAsset call,
    # and the staged upload was removed once copied to the asset's key.
    assert world.server.log().count(DOWNLOAD_CALL) == before_log
    assert not s3.keys(f"projects/alpha/uploads/{job.id}/")
    body, _ = client.download(item.assets["data"].href)
    # The control: a download through the server is in its access log.
    deadline = time.monotonic() + 10
    while world.server.log().count(DOWNLOAD_CALL) == before_log:
        assert time.monotonic() < deadline, "the access log shows no DownloadAsset call"
        time.sleep(0.05)
    output = tmp_path / "clip.tif"
    output.write_bytes(body)
    assert_clip_is_rasterio_mask(output)


def test_analytics_and_tiles_read_the_objects_in_place(s3, tmp_path):
    from geopera_kernel.analytics import AnalyticsContext, AssetView, ItemView, default_registry

    world = s3.world
    item_id = world.items[SOURCE]
    params = {"item_id": item_id, "index_name": "NDVI", "geometry": AOI, "percentiles": [10, 50, 90]}
    result = world.client("alpha").execute(
        "analytics.execute", analytics_pb2.AnalyticsExecuteParams(operation="zonal_stats", params=struct(params))
    )
    got = json_format.MessageToDict(result.result)
    views = {item_id: ItemView(id=item_id, assets={"data": AssetView(key="data", path=str(SAMPLES / f"{SOURCE}.tif"))})}
    expected = json.loads(json.dumps(default_registry().run("zonal_stats", params, AnalyticsContext(views, tmp_path))))
    assert got["zones"] == expected["zones"] and got["pixels_read"] == expected["pixels_read"] > 0
    token = world.tokens["alpha"]
    tile = fetch(f"{world.server.http_url}/v1/items/{item_id}/preview.png", token=token)
    assert tile.status == 200 and tile.body.startswith(b"\x89PNG")


def test_http_downloads_stream_from_the_bucket_with_range_and_signed_urls(s3):
    world = s3.world
    item_id = world.items[SOURCE]
    data = (SAMPLES / f"{SOURCE}.tif").read_bytes()
    url = f"{world.server.http_url}/v1/items/{item_id}/assets/data"
    whole = fetch(url, token=world.tokens["alpha"])
    assert whole.status == 200 and whole.body == data
    assert whole.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    part = fetch(url, token=world.tokens["alpha"], headers={"Range": "bytes=1000-1999"})
    assert part.status == 206 and part.body == data[1000:2000]
    tail = fetch(url, token=world.tokens["alpha"], headers={"Range": "bytes=-300"})
    assert tail.status == 206 and tail.body == data[-300:]
    signed = sign(world, f"items/{item_id}/assets/data")
    assert fetch(signed.url).body == data
    assert fetch(url).status == 401


# -- the presigned-upload door ------------------------------------------------------


def _fails(call) -> RpcFailure:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return RpcFailure.from_rpc_error(info.value)


def _good_cog(path: Path) -> Path:
    from geopera_kernel.raster import write_cog

    write_cog(path, np.full((1, 64, 64), 7, np.uint8), crs="EPSG:4326",
              transform=(0.01 / 64, 0, 14.55, 0, -0.01 / 64, 45.87), nodata=0, descriptions=["value"])  # fmt: skip
    return path


def _put(url: str, data: bytes) -> int:
    request = urllib.request.Request(url, method="PUT", data=data, headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def _register(raw: RawWorker, job_id: str, token: str, path: Path, href: str, sha256: str = ""):
    data = path.read_bytes()
    asset = worker_pb2.OutputAsset(key="data", href=href, size_bytes=len(data),
                                   sha256=sha256 or hashlib.sha256(data).hexdigest())  # fmt: skip
    item = worker_pb2.OutputItem(output_key="0", name=f"s3raw_{secrets.token_hex(3)}", geometry=struct(SQUARE),
                                 assets=[asset])  # fmt: skip
    return raw.stub.RegisterOutputs(iter([
        worker_pb2.RegisterOutputsRequest(job_id=job_id, item=item),
        worker_pb2.RegisterOutputsRequest(commit=True),
    ]), metadata=job_metadata(token), timeout=60)  # fmt: skip


def _sign(raw: RawWorker, job_id: str, token: str, output_key: str = "0", asset_key: str = "data"):
    target = worker_pb2.OutputUploadTarget(output_key=output_key, asset_key=asset_key)
    request = worker_pb2.SignOutputUploadsRequest(job_id=job_id, files=[target])
    return raw.stub.SignOutputUploads(request, metadata=job_metadata(token), timeout=30)


@pytest.fixture
def raw(s3) -> Iterator[RawWorker]:
    worker = RawWorker(s3.world.channel, s3.world.tokens["worker"], ["raw_outputs"], capacity=2)
    try:
        yield worker
    finally:
        worker.die()


def test_uploads_are_scoped_to_the_attempt_and_checked(s3, raw, tmp_path):
    world = s3.world
    client = world.client("alpha")
    first = create_and_dispatch(client, "raw_outputs", {}).job
    assignment = raw.next_assignment()
    assert assignment.presigned_uploads
    second = create_and_dispatch(client, "raw_outputs", {}).job
    other = raw.next_assignment()
    token = assignment.job_token
    cog = _good_cog(tmp_path / "out.tif")

    # Another job's token signs nothing for this job.
    failure = _fails(lambda: _sign(raw, first.id, other.job_token))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "JOB_TOKEN_MISMATCH")
    for bad in ("../x", "a/b", "", "x" * 80):
        failure = _fails(lambda bad=bad: _sign(raw, first.id, token, output_key=bad))
        assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_OUTPUT"), bad
    upload = _sign(raw, first.id, token).uploads[0]
    assert upload.href.startswith(f"projects/alpha/uploads/{first.id}/1/") and upload.expire_time.seconds > 0

    # Named before anything was uploaded, or with other bytes than declared: upload again.
    failure = _fails(lambda: _register(raw, first.id, token, cog, upload.href))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INCOMPLETE_UPLOAD")
    assert _put(upload.url, cog.read_bytes()) == 200
    failure = _fails(lambda: _register(raw, first.id, token, cog, upload.href, sha256="0" * 64))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INCOMPLETE_UPLOAD")
    state = client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=first.id)).job
    assert state.status in (STATUS.JOB_STATUS_DISPATCHED, STATUS.JOB_STATUS_RUNNING)

    # The other job cannot register this job's upload as its output: refused, and it fails.
    failure = _fails(lambda: _register(raw, second.id, other.job_token, cog, upload.href))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_OUTPUT_HREF")
    assert wait_terminal(client, second.id).status == STATUS.JOB_STATUS_FAILED

    # The real upload registers, copied to the item's key; the staged object is gone.
    done = _register(raw, first.id, token, cog, upload.href)
    assert done.job.status == STATUS.JOB_STATUS_SUCCEEDED
    item_id = done.items[0].id
    assert f"geopera/projects/alpha/items/{item_id}/data.tif" in s3.moto.keys(BUCKET)
    assert not s3.keys(f"projects/alpha/uploads/{first.id}/")
    assert client.download(f"items/{item_id}/assets/data")[0] == cog.read_bytes()


@pytest.mark.parametrize("href", [
    "projects/alpha/items/{source}/data.tif",  # a stored asset of the project
    "projects/beta/uploads/{job}/1/0/data.tif",  # this job's name under another project
    "projects/alpha/uploads/{job}/2/0/data.tif",  # another attempt
    "projects/alpha/uploads/{job}/1/0/../../../../items/{source}/data.tif",
    "/etc/passwd",
    "s3://other-bucket/x.tif",
])  # fmt: skip
def test_an_href_that_is_not_the_attempts_own_upload_fails_the_job(s3, raw, tmp_path, href):
    client = s3.world.client("alpha")
    job = create_and_dispatch(client, "raw_outputs", {}).job
    token = raw.next_assignment().job_token
    href = href.format(job=job.id, source=s3.world.items[SOURCE])
    failure = _fails(lambda: _register(raw, job.id, token, _good_cog(tmp_path / "out.tif"), href))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_OUTPUT_HREF")
    assert wait_terminal(client, job.id).status == STATUS.JOB_STATUS_FAILED


def test_assignment_urls_name_only_the_jobs_sources(s3, raw):
    world = s3.world
    client = world.client("alpha")
    source = world.items[SOURCE]
    params = processing_pb2.ProcessingCreateAndDispatchParams(
        project_id="alpha", job_type_id="raw_outputs", input_params=struct({"source_item_id": source})
    )
    job = client.execute("processing.create_and_dispatch", params).job
    assignment = raw.next_assignment()
    assert [(loc.item_id, loc.asset_key) for loc in assignment.source_assets] == [(source, "data")]
    location = assignment.source_assets[0]
    # Signed for that one object, for GEOPERA_PRESIGN_TTL (the bucket enforces the
    # signature; moto's server does not check it, so the test reads what was signed).
    parts = urllib.parse.urlsplit(location.download_url)
    assert parts.path == f"/{BUCKET}/geopera/projects/alpha/items/{source}/data.tif"
    assert urllib.parse.parse_qs(parts.query)["X-Amz-Expires"] == ["3600"]
    with urllib.request.urlopen(location.download_url, timeout=30) as response:
        assert hashlib.sha256(response.read()).hexdigest() == assignment.source_items[0].assets["data"].sha256
    client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id))


def test_the_sweep_removes_staged_uploads_a_crash_left_in_the_bucket(s3):
    from geopera_kernel.server.domain.sweep import StorageSweeper

    left = f"projects/alpha/uploads/job_{secrets.token_hex(4)}/1/0/data.tif"
    s3.moto.client().put_object(Bucket=BUCKET, Key=f"geopera/{left}", Body=b"staged, never registered")
    stored = s3.keys("projects/alpha/items/")

    async def sweep(services):
        return await StorageSweeper(services.db, services.storage).sweep(grace_seconds=0)

    with pytest.MonkeyPatch.context() as patch:
        for name in GDAL_ENDPOINT_VARIABLES:
            patch.delenv(name, raising=False)
        for name, value in s3.moto.env(BUCKET).items():
            patch.setenv(name, value)
        report = s3.world.with_services(sweep)
    assert left in report.orphan_objects
    assert left not in s3.keys("projects/alpha/uploads/")
    assert s3.keys("projects/alpha/items/") == stored  # referenced objects stay
