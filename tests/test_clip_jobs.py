"""clip.create_from_item through the whole job path: validation before any
credit moves, the output item, and pixels equal to rasterio.mask."""

from __future__ import annotations

import json
import math
import secrets

import grpc
import pytest
import rasterio
import rasterio.mask
from google.protobuf import json_format, struct_pb2
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import shape

from geopera.v1 import catalog_pb2, processing_pb2
from tests.conftest import SAMPLES
from tests.jobs_support import STATUS, assert_clip_is_rasterio_mask, balance, running_world, wait_terminal
from tests.support.client import RpcFailure

SOURCE = "s2l1c_slovenia_20150711_bgrn"
AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())


@pytest.fixture(scope="module")
def clip_world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("clip"), workers=1) as world:
        yield world


def _struct(value) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def _clip(world, aoi, **fields):
    params = processing_pb2.ClipCreateFromItemParams(
        source_item_id=fields.pop("source_item_id", world.items[SOURCE]), project_id="alpha", **fields
    )
    if aoi is not None:
        params.aoi_geometry.CopyFrom(aoi if isinstance(aoi, struct_pb2.Struct) else _struct(aoi))
    return world.client("alpha").execute("clip.create_from_item", params)


def test_a_clip_matches_rasterio_mask_pixel_for_pixel(clip_world, tmp_path):
    client = clip_world.client("alpha")
    before = balance(client)
    name = f"grassland_{secrets.token_hex(3)}"
    result = _clip(clip_world, AOI, output_name=name)
    assert result.assets_to_clip == 1 and list(result.asset_keys) == ["data"]
    assert result.dispatch.accepted
    final = wait_terminal(client, result.job.id)
    assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
    item = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=final.output_item_ids[0])).item
    assert item.name == name and item.collection_id == "clip" and item.job_id == final.id
    assert list(item.source_item_ids) == [clip_world.items[SOURCE]]
    source = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=clip_world.items[SOURCE])).item
    assert item.datetime == source.datetime
    aoi = shape(AOI["features"][0]["geometry"])
    footprint = shape(json_format.MessageToDict(item.geometry))
    assert (
        footprint.symmetric_difference(aoi.intersection(shape(json_format.MessageToDict(source.geometry)))).area < 1e-12
    )

    body, _ = client.download(item.assets["data"].href)
    output = tmp_path / "clip.tif"
    output.write_bytes(body)
    valid, errors, _ = cog_validate(str(output), quiet=True)
    assert valid, errors
    # The oracle reprojects the AOI with rasterio.warp, not with the clip's own helper.
    assert_clip_is_rasterio_mask(output)
    with rasterio.open(SAMPLES / f"{SOURCE}.tif") as src, rasterio.open(output) as out:
        assert out.nodata == src.nodata
        assert out.descriptions == src.descriptions and out.dtypes == src.dtypes
        assert out.tags(1)["STATISTICS_MEAN"]
    band = item.assets["data"].bands[2]
    assert band.common_name == "red" and band.statistics.valid_percent < 100

    # Credits: reserved by the estimate, captured by the actual cost, the rest released.
    assert final.credits_charged <= final.credits_reserved
    after = balance(client)
    assert before.available - after.available == final.credits_charged and after.held == before.held


def _poly(coordinates):
    return {"type": "Polygon", "coordinates": coordinates}


SQUARE = [[14.556, 45.868], [14.558, 45.868], [14.558, 45.870], [14.556, 45.870], [14.556, 45.868]]


@pytest.mark.parametrize(
    ("aoi", "reason", "field"),
    [
        ({"type": "Bogus"}, "INVALID_GEOMETRY", "aoi_geometry.type"),
        ("not geojson", "INVALID_GEOMETRY", "aoi_geometry.type"),
        (_poly([SQUARE[:-1]]), "INVALID_GEOMETRY", "aoi_geometry.coordinates[0]"),
        (_poly([[[14.556, 45.868], [14.558, 45.870], [14.558, 45.868], [14.556, 45.870], [14.556, 45.868]]]),
         "INVALID_GEOMETRY", "aoi_geometry"),
        (_poly([[[x + 1.0, y] for x, y in SQUARE]]), "AOI_OUTSIDE_FOOTPRINT", "aoi_geometry"),
        (_poly([[[14.556 + 0.002 * math.cos(t / 1e5 * 2 * math.pi), 45.869 + 0.001 * math.sin(t / 1e5 * 2 * math.pi)]
                 for t in range(100_001)] + [[14.558, 45.869]]]), "INVALID_GEOMETRY", "aoi_geometry.coordinates"),
        (None, "INVALID_GEOMETRY", "aoi_geometry"),
    ],
    ids=["wrong-type", "not-an-object", "unclosed", "self-intersecting", "outside", "too-many-vertices", "missing"],
)  # fmt: skip
def test_bad_aois_are_refused_before_any_credit_moves(clip_world, aoi, reason, field):
    client = clip_world.client("alpha")
    before = balance(client)
    if isinstance(aoi, str):
        aoi = struct_pb2.Struct(fields={"value": struct_pb2.Value(string_value=aoi)})
    with pytest.raises(RpcFailure) as info:
        _clip(clip_world, aoi)
    failure = info.value
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason), failure
    assert failure.violations and failure.violations[0][0] == field
    assert balance(client) == before


def test_a_nan_coordinate_is_refused(clip_world):
    aoi = _struct(_poly([SQUARE]))
    aoi.fields["coordinates"].list_value.values[0].list_value.values[1].list_value.values[0].number_value = math.nan
    with pytest.raises(RpcFailure) as info:
        _clip(clip_world, aoi)
    assert info.value.reason == "INVALID_GEOMETRY"
    assert info.value.violations[0][0] == "aoi_geometry.coordinates[0][1]"


def test_unknown_asset_keys_are_refused_by_name(clip_world):
    with pytest.raises(RpcFailure) as info:
        _clip(clip_world, AOI, asset_keys=["data", "nope"])
    assert (info.value.reason, info.value.violations[0][0]) == ("UNKNOWN_ASSET_KEY", "asset_keys[1]")
    assert "nope" in info.value.message


def test_a_multipolygon_feature_collection_aoi(clip_world):
    client = clip_world.client("alpha")
    squares = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": _poly([SQUARE])},
            {"type": "Feature", "properties": {},
             "geometry": _poly([[[x + 0.004, y + 0.003] for x, y in SQUARE]])},
        ],
    }  # fmt: skip
    final = wait_terminal(client, _clip(clip_world, squares).job.id)
    assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
    item = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=final.output_item_ids[0])).item
    assert item.geometry["type"] == "MultiPolygon"
