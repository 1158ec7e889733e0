"""Uploads and downloads: SHA-256 round trips, progress, resuming a download
cut midway (a real connection reset), checksum refusal, COG checks."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import rasterio
from geopera_sdk import ChecksumMismatch, Client, InvalidArgument, NotFound

from geopera.v1 import resources_pb2
from tests.conftest import SAMPLES
from tests.sdk.conftest import FAST_RETRIES
from tests.sdk.proxy import Fault, FaultyProxy

SCENE = SAMPLES / "s2l1c_slovenia_20150731_bgrn.tif"
STACK = "s2l1c_slovenia_ndvi_68dates"  # 2.7 MB: three 1 MiB chunks


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_register_a_file_and_download_it_back(client, tmp_path):
    seen: list[tuple[float, float]] = []
    item = client.items.register_file(
        "alpha", "sdk_uploaded", SCENE, collection_id="sdk", progress=lambda done, total: seen.append((done, total))
    )
    original = SCENE.read_bytes()
    assert seen[-1] == (len(original), len(original)) and item.collection_id == "sdk"
    asset = item.assets["data"]
    assert asset.size_bytes == len(original)

    downloaded: list[tuple[float, float]] = []
    dest = tmp_path / "copy.tif"
    result = client.download(asset, dest, progress=lambda done, total: downloaded.append((done, total)))
    assert result.sha256 == asset.sha256 == _sha256(dest.read_bytes())
    assert result.size_bytes == asset.size_bytes and result.path == dest and result.resumes == 0
    assert result.media_type.startswith("image/tiff")
    assert downloaded[-1] == (asset.size_bytes, asset.size_bytes)
    assert not (tmp_path / "copy.tif.part").exists()
    # A stored COG that needed no change is the uploaded file, byte for byte.
    assert asset.sha256 == _sha256(original)


def test_upload_bytes_in_small_chunks_then_create(client):
    data = SCENE.read_bytes()
    upload_id = client.upload("alpha", data, file_name="scene.tif", chunk_size=16 << 10)
    assert isinstance(upload_id, str) and upload_id
    item = client.items.create(
        "alpha", "sdk_from_bytes", [{"key": "data", "upload_id": upload_id}], collection_id="sdk", properties={"a": 1}
    )
    assert item.assets["data"].sha256 == _sha256(data) and item.properties["a"] == 1
    with io.BytesIO() as sink:
        result = client.download(item.assets["data"].href, sink)
        assert sink.getvalue() == data and result.path is None


def test_a_download_cut_midway_resumes_where_it_stopped(world, client, tmp_path):
    asset = client.items.get(world.items[STACK]).assets["data"]
    assert asset.size_bytes > 2 << 20
    with FaultyProxy(world.server.port) as proxy:
        proxy.break_next_connection(Fault(after_response_bytes=1_300_000))
        with Client(proxy.address, world.tokens["alpha"], retries=FAST_RETRIES) as flaky:
            result = flaky.download(asset, tmp_path / "stack.tif")
        assert proxy.resets == 1
    assert result.resumes == 1
    data = (tmp_path / "stack.tif").read_bytes()
    assert len(data) == asset.size_bytes and _sha256(data) == asset.sha256 == result.sha256
    assert data == (SAMPLES / f"{STACK}.tif").read_bytes()


def test_a_checksum_mismatch_is_refused_and_leaves_no_file(client, world, tmp_path):
    real = client.items.get(world.items["s2l1c_slovenia_20150711_bgrn"]).assets["data"]
    forged = resources_pb2.Asset(href=real.href, sha256="0" * 64)
    with pytest.raises(ChecksumMismatch):
        client.download(forged, tmp_path / "bad.tif")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NotFound) as info:
        client.download("items/it_missing/assets/data", tmp_path / "missing.tif")
    assert info.value.reason == "ITEM_NOT_FOUND" and list(tmp_path.iterdir()) == []


def test_a_plain_geotiff_is_refused_unless_converted(client, tmp_path):
    path = tmp_path / "plain.tif"
    # Striped, no overviews, 1024 px: not cloud-optimized.
    profile = {
        "driver": "GTiff",
        "width": 1024,
        "height": 1024,
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:4326",
        "transform": rasterio.transform.from_origin(14.55, 45.87, 1e-5, 1e-5),
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write((np.arange(1024 * 1024) % 251).astype(np.uint8).reshape(1, 1024, 1024))
    with pytest.raises(InvalidArgument) as info:
        client.items.register_file("alpha", "sdk_plain_20200101", path, collection_id="sdk")
    assert info.value.reason == "NOT_A_COG" and info.value.field_violations
    item = client.items.register_file("alpha", "sdk_plain_20200101", path, collection_id="sdk", convert_to_cog=True)
    assert item.assets["data"].grid.compression.upper() == "ZSTD"
