"""S3Storage against a real S3 API (moto's server in its own process): the BlobStorage
contract, GDAL reading objects in place through /vsis3/, and presigned URLs signed for
one object and one lifetime."""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geopera_kernel.raster.s3_endpoint import GDAL_ENDPOINT_VARIABLES
from geopera_kernel.raster.safe_open import open_stored
from tests.conftest import SAMPLES
from tests.support.s3 import MotoServer

SAMPLE = SAMPLES / "s2l1c_slovenia_20150711_bgrn.tif"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def storage(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from geopera_kernel.server.storage_s3 import S3Storage

    moto.create_bucket("contract")
    with pytest.MonkeyPatch.context() as patch:
        for name in GDAL_ENDPOINT_VARIABLES:  # set by S3Storage; restored after
            patch.delenv(name, raising=False)
        for name, value in moto.env("contract", "pre/fix").items():
            patch.setenv(name, value)
        yield S3Storage("s3://contract/pre/fix", tmp_path_factory.mktemp("scratch"), presign_ttl_seconds=600)


def _http(url: str, *, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, method=method, data=data, headers={"Content-Type": "application/octet-stream"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_the_blob_storage_contract(storage, moto, tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    payload = np.random.default_rng(7).bytes(3 << 20)  # several of the reader's buffers
    source.write_bytes(payload)
    storage.put_file("projects/p/items/a/data.tif", source)
    assert source.exists()  # put copies
    assert moto.keys("contract") == ["pre/fix/projects/p/items/a/data.tif"]
    assert storage.exists("projects/p/items/a/data.tif") and storage.size("projects/p/items/a/data.tif") == len(payload)
    with storage.open_read("projects/p/items/a/data.tif") as stream:
        assert stream.read() == payload
        stream.seek(1_500_000)
        assert stream.read(10) == payload[1_500_000:1_500_010]
        stream.seek(-5, 2)
        assert stream.read() == payload[-5:]
    storage.move_file("projects/p/items/b/data.tif", source)
    assert not source.exists()
    assert sorted(o.key for o in storage.list_objects("projects/p/")) == [
        "projects/p/items/a/data.tif",
        "projects/p/items/b/data.tif",
    ]
    assert all(o.stored_time > time.time() - 120 for o in storage.list_objects("projects/"))
    storage.copy("projects/p/items/b/data.tif", "projects/p/items/c/data.tif")
    assert (
        hashlib.sha256(storage.open_read("projects/p/items/c/data.tif").read()).digest()
        == hashlib.sha256(payload).digest()
    )
    for key in ("projects/p/items/a/data.tif", "projects/p/items/b/data.tif", "projects/p/items/c/data.tif"):
        storage.delete(key)
    storage.delete("projects/p/items/never/data.tif")  # no error when absent
    assert not storage.exists("projects/p/items/a/data.tif")
    with pytest.raises(FileNotFoundError):
        storage.open_read("projects/p/items/a/data.tif")
    with pytest.raises(FileNotFoundError):
        storage.size("projects/p/items/a/data.tif")
    for bad in ("../escape.tif", "/abs.tif", "a//b.tif", ""):
        with pytest.raises(ValueError):
            storage.put_file(bad, SAMPLE)


def test_gdal_reads_the_object_in_place_with_vsis3(storage) -> None:
    storage.put_file("projects/p/items/cog/data.tif", SAMPLE)
    path = storage.local_path("projects/p/items/cog/data.tif")
    assert path == "/vsis3/contract/pre/fix/projects/p/items/cog/data.tif"
    with open_stored(path) as remote, open_stored(str(SAMPLE)) as local:
        assert remote.profile == local.profile
        window = ((100, 164), (50, 114))
        assert np.array_equal(remote.read(window=window), local.read(window=window))


def test_presigned_urls_reach_one_object_and_expire(storage, moto) -> None:
    from geopera_kernel.server.storage_s3 import S3Storage

    storage.put_file("projects/p/items/signed/data.tif", SAMPLE)
    status, body = _http(storage.presign_get("projects/p/items/signed/data.tif"))
    assert status == 200 and body == SAMPLE.read_bytes()
    status, _ = _http(storage.presign_put("projects/p/uploads/j/1/0/data.tif"), method="PUT", data=b"uploaded")
    assert status == 200
    assert storage.open_read("projects/p/uploads/j/1/0/data.tif").read() == b"uploaded"

    # Each URL is signed for one object and one lifetime. The bucket enforces both (moto's
    # server does not check presigned signatures, so the test reads what was signed).
    for url in (storage.presign_get("projects/p/items/signed/data.tif"), storage.presign_put("projects/p/x.tif")):
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query)
        assert parts.path in (
            "/contract/pre/fix/projects/p/items/signed/data.tif",
            "/contract/pre/fix/projects/p/x.tif",
        )
        assert query["X-Amz-Expires"] == ["600"] and query["X-Amz-SignedHeaders"] == ["host"]
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Signature"][0]
    short = S3Storage("s3://contract/pre/fix", storage.scratch_dir(), presign_ttl_seconds=5)
    assert "X-Amz-Expires=5&" in short.presign_get("projects/p/items/signed/data.tif")
