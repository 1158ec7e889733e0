"""analytics.execute through the server: the same numbers the library
computes, the method catalogue, artifacts stored and downloadable, errors with
the expected schema, and a plugin method reachable with no proto change."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest
import rasterio
from google.protobuf import json_format, struct_pb2
from rasterio.features import geometry_mask
from rio_cogeo.cogeo import cog_validate

from geopera.v1 import analytics_pb2, errors_pb2
from geopera_kernel.analytics import AnalyticsContext, AssetView, ItemView, default_registry
from tests.conftest import SAMPLES
from tests.support import reference_geometry
from tests.support.client import RpcFailure
from tests.support.server import REPO

AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
ZONES = json.loads((SAMPLES / "lulc_zones_epsg4326.geojson").read_text())


def _struct(value) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def run(world, operation: str, params: dict, *, token: str = "alpha", timeout: float = 60):
    result = world.client(token).execute(
        "analytics.execute",
        analytics_pb2.AnalyticsExecuteParams(operation=operation, params=_struct(params)),
        timeout=timeout,
    )
    return result, json_format.MessageToDict(result.result)


def _fails(world, operation: str, params) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        world.client("alpha").execute(
            "analytics.execute",
            analytics_pb2.AnalyticsExecuteParams(
                operation=operation, params=params if isinstance(params, struct_pb2.Struct) else _struct(params)
            ),
        )
    failure = info.value
    assert failure.code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), failure
    return failure


def _library(operation: str, params: dict, items: dict[str, Path], tmp_path: Path) -> dict:
    """The same call made directly on the library, as the reference."""
    views = {
        item_id: ItemView(id=item_id, assets={"data": AssetView(key="data", path=str(path))})
        for item_id, path in items.items()
    }
    context = AnalyticsContext(items=views, artifact_dir=tmp_path)
    return json.loads(json.dumps(default_registry().run(operation, params, context)))


def test_the_method_catalogue(world):
    client = world.client("alpha")
    listed = client.execute("analytics.operations.list", analytics_pb2.AnalyticsOperationsListParams()).operations
    names = [o.name for o in listed]
    assert names == sorted(names) and {"zonal_stats", "time_series", "change_detection", "pixel_count"} <= set(names)
    zonal = client.execute("analytics.operations.get", analytics_pb2.AnalyticsOperationsGetParams(name="zonal_stats"))
    schema = json_format.MessageToDict(zonal.operation.input_schema)
    assert "geometry" in schema["properties"] and zonal.operation.description
    assert json_format.MessageToDict(zonal.operation.example)["item_id"]
    with pytest.raises(RpcFailure) as info:
        client.execute("analytics.operations.get", analytics_pb2.AnalyticsOperationsGetParams(name="nope"))
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_ANALYTICS_OPERATION")


def test_zonal_stats_equals_the_library_on_the_real_zones(world, tmp_path):
    item_id = world.items["s2l1c_slovenia_20150711_bgrn"]
    params = {"item_id": item_id, "index_name": "NDVI", "geometry": ZONES, "percentiles": [10, 50, 90]}
    response, result = run(world, "zonal_stats", params)
    assert response.operation == "zonal_stats" and not response.outputs
    reference = _library("zonal_stats", params, {item_id: SAMPLES / "s2l1c_slovenia_20150711_bgrn.tif"}, tmp_path)
    assert len(result["zones"]) == len(ZONES["features"]) == 88
    for got, expected in zip(result["zones"], reference["zones"], strict=True):
        assert got["properties"] == expected["properties"]
        for name, value in expected["stats"].items():
            assert (
                got["stats"][name] == pytest.approx(value, rel=1e-12)
                if value is not None
                else got["stats"][name] is None
            )
        assert [p["percentile"] for p in got["percentiles"]] == [10, 50, 90]
        for ours, theirs in zip(got["percentiles"], expected["percentiles"], strict=True):
            assert ours["percentile"] == theirs["percentile"]
            assert ours["value"] == (pytest.approx(theirs["value"], rel=1e-12) if theirs["value"] is not None else None)
    assert result["coverage"] == "center" and result["pixels_read"] > 0 and result["resolution"]["x"] > 9
    # The grassland zones' mean NDVI matches the sample's documented value.
    grass = [z["stats"]["mean"] for z in result["zones"] if z["properties"]["LULC_NAME"] == "grassland"]
    grass = [mean for mean in grass if mean is not None]  # zones off the 1 km² patch have none
    assert grass and abs(np.mean(grass) - 0.666) < 0.05


def test_time_series_over_the_68_date_stack(world):
    stack = world.items["s2l1c_slovenia_ndvi_68dates"]
    _, result = run(world, "time_series", {"item_id": stack, "geometry": AOI, "reducer": "mean"})
    steps = result["steps"]
    assert len(steps) == 68
    assert [s["datetime"] for s in steps] == sorted(s["datetime"] for s in steps)
    with rasterio.open(SAMPLES / "s2l1c_slovenia_ndvi_68dates.tif") as src:
        assert [s["datetime"][:10] for s in steps] == [d[:10] for d in src.descriptions]
        data = src.read()
        area = reference_geometry.reproject(reference_geometry.lonlat_area(AOI), src.crs)
        inside = geometry_mask([area], out_shape=data.shape[1:], transform=src.transform, invert=True)
    # Each step's mean is numpy's over the pixels whose centre is in the AOI (NaN is nodata).
    for step, band in zip(steps, data, strict=True):
        values = band[inside & ~np.isnan(band)]
        assert step["count"] == values.size
        if values.size:
            assert step["value"] == pytest.approx(float(np.mean(values, dtype=np.float64)), rel=1e-6), step
        else:
            assert step.get("value") is None
    assert sum(1 for s in steps if s["count"]) > 30


def test_change_detection_stores_a_cog_and_a_quicklook(world, tmp_path):
    before, after = world.items["s2l1c_slovenia_20150711_bgrn"], world.items["s2l1c_slovenia_20150909_bgrn"]
    response, result = run(world, "change_detection", {
        "before_item_id": before, "after_item_id": after, "index_name": "NDVI", "change_threshold": 0.05,
        "geometry": AOI,
    })  # fmt: skip
    counts = {k: result[k]["count"] for k in ("increase", "decrease", "no_change")}
    assert sum(counts.values()) == result["compared_count"] > 0
    assert abs(sum(result[k]["fraction"] for k in counts) - 1) < 1e-9
    assert {o.key for o in response.outputs} == {"difference_cog", "quicklook_png"}
    client = world.client("alpha")
    for output in response.outputs:
        assert output.href == f"artifacts/{output.id}"
        body, first = client.download(output.href)
        assert len(body) == output.size_bytes == first.total_size and first.media_type == output.media_type
        path = tmp_path / output.key
        path.write_bytes(body)
        if output.key == "quicklook_png":
            assert body[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            valid, errors, _ = cog_validate(str(path), quiet=True)
            assert valid, errors
    # Another project's token cannot read the artifacts.
    with pytest.raises(RpcFailure) as info:
        world.client("beta").download(response.outputs[0].href)
    assert info.value.reason == "PROJECT_ACCESS_DENIED"


@pytest.mark.parametrize(
    ("params", "field_prefix"),
    [
        ({"index_name": "NDVI"}, "params.item_id"),
        ({"item_id": "it_x", "index_name": "NOPE", "geometry": AOI}, "params.index_name"),
        ({"item_id": "it_x", "index_name": "NDVI", "geometry": {"type": "Polygon", "coordinates": []}},
         "params.geometry"),
        ({"item_id": "it_x", "index_name": "NDVI", "geometry": AOI, "bogus": 1}, "params.bogus"),
    ],
    ids=["missing-item", "unknown-index", "empty-geometry", "unknown-field"],
)  # fmt: skip
def test_invalid_params_carry_every_violation_and_the_schema(world, params, field_prefix):
    failure = _fails(world, "zonal_stats", params)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ANALYTICS_PARAMS")
    assert any(field.startswith(field_prefix) for field, _ in failure.violations), failure.violations
    assert isinstance(failure.expected_schema, errors_pb2.ExpectedSchema)
    assert failure.expected_schema.subject == "zonal_stats"
    assert "geometry" in json_format.MessageToDict(failure.expected_schema.json_schema)["properties"]


def test_missing_bands_and_unknown_methods(world):
    item_id = world.items["s2l1c_slovenia_ndvi_68dates"]
    failure = _fails(world, "zonal_stats", {"item_id": item_id, "index_name": "NDWI", "geometry": AOI})
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MISSING_BANDS")
    assert failure.metadata["bands_found"] and failure.expected_schema is not None
    failure = _fails(world, "no_such_method", {})
    assert failure.reason == "UNKNOWN_ANALYTICS_OPERATION" and "zonal_stats" in failure.metadata["known_operations"]


def test_an_aoi_that_misses_the_raster_gives_count_zero(world):
    far = {"type": "Polygon", "coordinates": [[[10, 40], [10.01, 40], [10.01, 40.01], [10, 40.01], [10, 40]]]}
    _, result = run(world, "zonal_stats", {"item_id": world.items["s2l1c_slovenia_20150711_bgrn"], "band": 1,
                                           "geometry": far, "stats": ["count", "mean"]})  # fmt: skip
    assert result["zones"][0]["stats"] == {"count": 0, "mean": None}


def test_other_projects_items_are_denied(world):
    failure = _fails(world, "zonal_stats", {"item_id": world.beta_items["s2l1c_slovenia_20150711_bgrn"], "band": 1,
                                            "geometry": AOI})  # fmt: skip
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PROJECT_ACCESS_DENIED")


def test_a_plugin_method_is_callable_through_execute_and_grpcurl(world):
    item_id = world.items["s2l1c_slovenia_20150711_bgrn"]
    _, result = run(world, "pixel_count", {"item_id": item_id})
    assert result == {"item_id": item_id, "width": 100, "height": 101, "pixels": 10100, "bands": 4}
    body = json.dumps({
        "operation": "analytics.execute",
        "params": {"@type": "type.googleapis.com/geopera.v1.AnalyticsExecuteParams", "operation": "pixel_count",
                   "params": {"item_id": item_id}},
    })  # fmt: skip
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    completed = subprocess.run(
        ["grpcurl", "-plaintext", "-H", f"authorization: Bearer {world.tokens['alpha']}", "-d", body,
         world.server.address, "geopera.v1.KernelService/Execute"],
        capture_output=True, text=True, timeout=60, env=env, check=True,
    )  # fmt: skip
    assert json.loads(completed.stdout)["result"]["result"]["pixels"] == 10100
