"""Uploads, items.create, items.list / items.get and downloads, end to end
through a real server."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
import pytest
import rasterio
from google.protobuf import struct_pb2, timestamp_pb2
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from geopera.v1 import catalog_pb2, kernel_pb2
from tests.conftest import SAMPLES
from tests.support.client import RpcFailure

SAMPLE = SAMPLES / "s2l1c_slovenia_20150711_bgrn.tif"


def _fails(call) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        call()
    failure = info.value
    assert failure.code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), failure
    assert failure.has_error_info
    return failure


def _striped_geotiff(path: Path) -> Path:
    data = (np.arange(600 * 700, dtype=np.uint16).reshape(1, 600, 700) % 1000) + 1
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=700,
        height=600,
        count=1,
        dtype="uint16",
        crs="EPSG:32633",
        transform=from_origin(465000, 5080000, 10, 10),
        nodata=0,
    ) as dst:
        dst.write(data)
    return path


def _create(client, upload_id: str, name: str, **kwargs) -> catalog_pb2.ItemsCreateResult:
    return client.execute(
        "items.create",
        catalog_pb2.ItemsCreateParams(
            project_id="alpha",
            collection_id="uploads",
            name=name,
            assets=[catalog_pb2.AssetInput(key="data", upload_id=upload_id)],
            **kwargs,
        ),
    )


def _storage_files(world) -> set[Path]:
    root = world.home / "storage" / "projects"
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def _alpha_item_count(world) -> int:
    result = world.client("admin").execute(
        "items.list", catalog_pb2.ItemsListParams(project_id="alpha", page_size=1000)
    )
    return len(result.items)


def test_upload_register_get_and_download_round_trip(world):
    client = world.client("alpha")
    data = SAMPLE.read_bytes()
    upload = client.upload("alpha", data, chunk=10_000)
    assert upload.committed_size == len(data)
    assert upload.sha256 == hashlib.sha256(data).hexdigest()

    name = f"roundtrip_{secrets.token_hex(3)}_20150711"
    item = _create(client, upload.upload_id, name).item
    assert item.id.startswith("it_") and item.name == name and item.collection_id == "uploads"
    assert item.datetime.ToDatetime(tzinfo=UTC) == datetime(2015, 7, 11, 10, 0, 8, tzinfo=UTC)  # from the tags
    west, south, east, north = item.bbox
    assert 14.55 < west < east < 14.57 and 45.86 < south < north < 45.88
    assert item.geometry["type"] == "Polygon"
    asset = item.assets["data"]
    assert asset.media_type == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert [b.common_name for b in asset.bands] == ["blue", "green", "red", "nir"]
    with rasterio.open(SAMPLE) as src:
        red = src.read(3, masked=True)
        assert asset.grid.crs == "EPSG:32633"
        assert (asset.grid.width, asset.grid.height) == (src.width, src.height)
    stats = asset.bands[2].statistics
    assert stats.minimum == red.min() and stats.maximum == red.max()
    assert stats.mean == pytest.approx(float(red.mean()), rel=1e-9)
    assert asset.bands[2].nodata == 0
    assert len(asset.render.rescale) == 4
    assert list(asset.render.rgb_bands) == [3, 2, 1]

    fetched = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=item.id)).item
    assert fetched == item

    body, first = client.download(asset.href)
    assert body == data
    assert (first.total_size, first.sha256, first.media_type) == (len(data), asset.sha256, asset.media_type)
    part, _ = client.download(asset.href, read_offset=100, read_limit=50)
    assert part == data[100:150]


def test_an_upload_is_consumed_once(world):
    client = world.client("alpha")
    upload = client.upload("alpha", SAMPLE.read_bytes())
    _create(client, upload.upload_id, f"once_{secrets.token_hex(3)}_20150711")
    failure = _fails(lambda: _create(client, upload.upload_id, f"twice_{secrets.token_hex(3)}_20150711"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "UPLOAD_NOT_AVAILABLE")


def test_a_non_cog_is_refused_with_findings_and_leaves_nothing(world, tmp_path):
    client = world.client("alpha")
    before_items, before_files = _alpha_item_count(world), _storage_files(world)
    upload = client.upload("alpha", _striped_geotiff(tmp_path / "striped.tif").read_bytes())
    failure = _fails(lambda: _create(client, upload.upload_id, "striped_20200101"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NOT_A_COG")
    assert failure.metadata["findings"]
    assert failure.violations[0][0] == "assets[0]"
    assert _alpha_item_count(world) == before_items
    assert _storage_files(world) == before_files

    # The refused upload stays usable: converting on request registers a COG.
    item = _create(client, upload.upload_id, "striped_20200101", convert_to_cog=True).item
    body, _ = client.download(item.assets["data"].href)
    converted = tmp_path / "converted.tif"
    converted.write_bytes(body)
    valid, errors, _ = cog_validate(str(converted))
    assert valid, errors
    with rasterio.open(converted) as src, rasterio.open(tmp_path / "striped.tif") as original:
        assert np.array_equal(src.read(), original.read())
        assert src.profile["compress"].lower() == "zstd" and src.nodata == 0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"this is not a raster at all" * 100, "UNSUPPORTED_RASTER_FORMAT"),
        (SAMPLE.read_bytes()[: len(SAMPLE.read_bytes()) // 2], "UNREADABLE_RASTER"),
    ],
    ids=["text", "truncated-cog"],
)
def test_corrupt_files_are_refused(world, payload, reason):
    client = world.client("alpha")
    before_items, before_files = _alpha_item_count(world), _storage_files(world)
    upload = client.upload("alpha", payload)
    failure = _fails(lambda: _create(client, upload.upload_id, "corrupt_20200101"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert _alpha_item_count(world) == before_items
    assert _storage_files(world) == before_files


def test_an_upload_stream_without_finish_write_keeps_nothing(world):
    client = world.client("alpha")
    staging = world.home / "storage" / ".scratch" / "uploads"
    before = set(staging.iterdir()) if staging.exists() else set()
    failure = _fails(lambda: client.upload("alpha", SAMPLE.read_bytes(), finish=False))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INCOMPLETE_UPLOAD")
    assert (set(staging.iterdir()) if staging.exists() else set()) == before


def test_an_upload_whose_bytes_do_not_match_its_checksum_is_refused(world):
    failure = _fails(lambda: world.client("alpha").upload("alpha", SAMPLE.read_bytes(), sha256="0" * 64))
    assert failure.reason == "INCOMPLETE_UPLOAD"
    assert failure.violations[0][0] == "sha256"


def test_an_upload_with_a_gap_is_refused(world):
    client = world.client("alpha")

    def requests():
        yield kernel_pb2.UploadAssetRequest(project_id="alpha", write_offset=0, data=b"abc")
        yield kernel_pb2.UploadAssetRequest(write_offset=10, data=b"def", finish_write=True)

    with pytest.raises(grpc.RpcError) as info:
        client.stub.UploadAsset(requests(), metadata=client.metadata())
    failure = RpcFailure.from_rpc_error(info.value)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_WRITE_OFFSET")


def test_an_upload_into_another_project_is_denied(world):
    failure = _fails(lambda: world.client("alpha").upload("beta", b"x"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PROJECT_ACCESS_DENIED")


def test_duplicate_names_are_refused_and_the_upload_survives(world):
    client = world.client("alpha")
    name = f"dup_{secrets.token_hex(3)}_20150711"
    _create(client, client.upload("alpha", SAMPLE.read_bytes()).upload_id, name)
    upload = client.upload("alpha", SAMPLE.read_bytes())
    failure = _fails(lambda: _create(client, upload.upload_id, name))
    assert (failure.code, failure.reason) == (grpc.StatusCode.ALREADY_EXISTS, "ITEM_NAME_TAKEN")
    _create(client, upload.upload_id, name + "_again")


def test_server_paths_are_for_admins_only(world):
    params = catalog_pb2.ItemsCreateParams(
        project_id="alpha",
        name="local_20150711",
        assets=[catalog_pb2.AssetInput(key="data", server_href=str(SAMPLE))],
    )
    failure = _fails(lambda: world.client("alpha").execute("items.create", params))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SERVER_HREF_REQUIRES_ADMIN")


def test_a_name_without_a_date_needs_a_datetime(world, tmp_path):
    client = world.client("alpha")
    path = tmp_path / "nodate.tif"
    with rasterio.open(SAMPLE) as src:
        profile = src.profile
        data = src.read()
    from geopera_kernel.raster import write_cog

    write_cog(
        path,
        data,
        crs=profile["crs"],
        transform=profile["transform"],
        nodata=0,
        descriptions=["blue", "green", "red", "nir"],
    )
    upload = client.upload("alpha", path.read_bytes())
    failure = _fails(lambda: _create(client, upload.upload_id, "no_date_here"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DATETIME_REQUIRED")
    when = timestamp_pb2.Timestamp(seconds=1_600_000_000)
    item = _create(client, upload.upload_id, "no_date_here", datetime=when).item
    assert item.datetime == when


def test_list_filters_and_pages(world):
    client = world.client("alpha")
    everything = client.execute(
        "items.list", catalog_pb2.ItemsListParams(project_id="alpha", collection_id="s2_slovenia")
    ).items
    assert len(everything) == 7
    datetimes = [i.datetime.ToDatetime() for i in everything]
    assert datetimes == sorted(datetimes)

    seen, token = [], ""
    while True:
        page = client.execute(
            "items.list",
            catalog_pb2.ItemsListParams(project_id="alpha", collection_id="s2_slovenia", page_size=2, page_token=token),
        )
        assert len(page.items) <= 2
        seen += [i.id for i in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == [i.id for i in everything]

    august = client.execute(
        "items.list",
        catalog_pb2.ItemsListParams(
            project_id="alpha",
            collection_id="s2_slovenia",
            datetime_start=timestamp_pb2.Timestamp(seconds=int(datetime(2015, 8, 1, tzinfo=UTC).timestamp())),
            datetime_end=timestamp_pb2.Timestamp(seconds=int(datetime(2015, 9, 1, tzinfo=UTC).timestamp())),
        ),
    ).items
    assert [i.name for i in august] == ["s2l1c_slovenia_20150820_bgrn", "s2l1c_slovenia_20150830_bgrn"]

    far_away = client.execute("items.list", catalog_pb2.ItemsListParams(project_id="alpha", bbox=[0, 0, 1, 1])).items
    assert far_away == []
    around = client.execute(
        "items.list",
        catalog_pb2.ItemsListParams(project_id="alpha", collection_id="s2_slovenia", bbox=[14.5, 45.8, 14.6, 45.9]),
    ).items
    assert len(around) == 7

    with pytest.raises(RpcFailure) as info:
        client.execute(
            "items.list",
            catalog_pb2.ItemsListParams(project_id="alpha", collection_id="uploads", page_token=page_token_of(client)),
        )
    assert info.value.reason == "INVALID_PAGE_TOKEN"


def page_token_of(client) -> str:
    page = client.execute(
        "items.list",
        catalog_pb2.ItemsListParams(project_id="alpha", collection_id="s2_slovenia", page_size=1),
    )
    assert page.next_page_token
    return page.next_page_token


def _geojson(obj) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(obj)
    return s


def test_list_by_intersecting_geometry(world):
    client = world.client("alpha")
    inside = {
        "type": "Polygon",
        "coordinates": [[[14.555, 45.868], [14.56, 45.868], [14.56, 45.872], [14.555, 45.872], [14.555, 45.868]]],
    }
    # Inside the bbox of the footprint's corner, but outside the footprint itself? The footprint
    # is nearly axis-aligned, so use a polygon clearly outside instead.
    outside = {
        "type": "Polygon",
        "coordinates": [[[14.60, 45.80], [14.61, 45.80], [14.61, 45.81], [14.60, 45.81], [14.60, 45.80]]],
    }
    hits = client.execute(
        "items.list",
        catalog_pb2.ItemsListParams(project_id="alpha", collection_id="s2_slovenia", intersects=_geojson(inside)),
    ).items
    assert len(hits) == 7
    misses = client.execute(
        "items.list", catalog_pb2.ItemsListParams(project_id="alpha", intersects=_geojson(outside))
    ).items
    assert misses == []


@pytest.mark.parametrize(
    ("geojson", "field"),
    [
        ({"type": "Polygon"}, "intersects.coordinates"),
        ({"type": "Point", "coordinates": [1, 2]}, "intersects.type"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}, "intersects.coordinates[0]"),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], ["x", 1], [0, 0]]]},
            "intersects.coordinates[0][2]",
        ),
        ({"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}, "intersects"),
        ({"type": "Feature", "geometry": None}, "intersects.geometry"),
        ({"type": "FeatureCollection", "features": []}, "intersects.features"),
    ],
    ids=["no-coordinates", "point", "unclosed", "non-numeric", "bow-tie", "null-feature", "empty-collection"],
)
def test_malformed_geojson_is_invalid_argument(world, geojson, field):
    failure = _fails(
        lambda: world.client("alpha").execute(
            "items.list", catalog_pb2.ItemsListParams(project_id="alpha", intersects=_geojson(geojson))
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_GEOMETRY")
    assert failure.violations[0][0] == field


@pytest.mark.parametrize(
    ("resource", "code", "reason"),
    [
        ("items/it_missing/assets/data", grpc.StatusCode.NOT_FOUND, "ITEM_NOT_FOUND"),
        ("bogus", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESOURCE_NAME"),
    ],
)
def test_download_errors(world, resource, code, reason):
    failure = _fails(lambda: world.client("alpha").download(resource))
    assert (failure.code, failure.reason) == (code, reason)


def test_download_of_a_missing_asset_and_a_foreign_item(world):
    item_id = next(iter(world.items.values()))
    failure = _fails(lambda: world.client("alpha").download(f"items/{item_id}/assets/nope"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "ASSET_NOT_FOUND")
    beta_id = next(iter(world.beta_items.values()))
    failure = _fails(lambda: world.client("alpha").download(f"items/{beta_id}/assets/data"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PROJECT_ACCESS_DENIED")
    failure = _fails(lambda: world.client("alpha").download(f"items/{item_id}/assets/data", read_offset=10**9))
    assert (failure.code, failure.reason) == (grpc.StatusCode.OUT_OF_RANGE, "INVALID_READ_OFFSET")
