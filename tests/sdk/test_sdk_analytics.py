"""Analytics through the SDK: the method list, `execute`, and the dynamic
method attributes built from the server's JSON Schemas."""

from __future__ import annotations

import hashlib
import inspect
import json

import pytest
import rasterio
from geopera_sdk import AnalyticsResult, AsyncClient, InvalidArgument
from geopera_sdk._analytics import MethodSpec, make_method

from geopera.v1 import analytics_pb2
from tests.conftest import SAMPLES

AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
SCENES = ("s2l1c_slovenia_20150711_bgrn", "s2l1c_slovenia_20150909_bgrn")


def _server_method_specs() -> dict[str, analytics_pb2.AnalyticsOperation]:
    """The built-in methods as the server describes them (its own registry)."""
    from google.protobuf import json_format

    from geopera_kernel.analytics import default_registry

    registry = default_registry() if callable(default_registry) else default_registry
    out = {}
    for name in registry.names():
        message = analytics_pb2.AnalyticsOperation()
        json_format.ParseDict(registry.describe(name), message)
        out[name] = message
    return out


def test_methods_get_their_signature_and_docstring_from_the_schema():
    """Built from the server's own descriptions of its methods (no server call)."""
    specs = _server_method_specs()
    calls = []
    zonal = make_method(MethodSpec.from_proto(specs["zonal_stats"]), lambda *a: calls.append(a), is_async=False)
    signature = inspect.signature(zonal)
    assert zonal.__name__ == "zonal_stats" and specs["zonal_stats"].description.split(".")[0] in zonal.__doc__
    # One item (`item_id`) or a mosaic (`item_ids`): neither alone is required.
    assert signature.parameters["item_id"].default is None and "item_ids" in signature.parameters
    assert signature.parameters["geometry"].kind is inspect.Parameter.KEYWORD_ONLY
    assert signature.parameters["band"].default is None and "index_name" in zonal.__doc__
    assert signature.return_annotation is AnalyticsResult
    zonal(item_id="it_x", geometry=AOI)
    assert calls == [("zonal_stats", {"item_id": "it_x", "geometry": AOI})]
    with pytest.raises(TypeError, match="bogus"):
        zonal(item_id="it_x", bogus=1)  # the schema is closed: like any Python function
    change = make_method(MethodSpec.from_proto(specs["change_detection"]), lambda *a: None, is_async=True)
    assert inspect.iscoroutinefunction(change) and "band_mapping" in inspect.signature(change).parameters


def test_analytics_methods_are_listed_and_callable(client, world):
    names = [op.name for op in client.analytics.operations()]
    assert {"zonal_stats", "time_series", "change_detection"} <= set(names) and names == sorted(names)
    assert client.analytics.operation("zonal_stats").input_schema["properties"]
    assert "zonal_stats" in dir(client.analytics)
    assert "item_id" in inspect.signature(client.analytics.zonal_stats).parameters

    item = world.items[SCENES[0]]
    result = client.analytics.zonal_stats(item_id=item, geometry=AOI, index_name="NDVI")
    assert isinstance(result, AnalyticsResult) and result.operation == "zonal_stats"
    assert result["item_id"] == item and result["zones"]
    same = client.analytics.execute("zonal_stats", {"item_id": item, "geometry": AOI}, index_name="NDVI")
    assert same.result["zones"] == result.result["zones"]

    with pytest.raises(AttributeError):
        client.analytics.no_such_method  # noqa: B018

    with pytest.raises(InvalidArgument) as info:
        client.analytics.zonal_stats(item_id=item, geometry=AOI, band=0)
    error = info.value
    assert error.reason == "INVALID_ANALYTICS_PARAMS" and error.expected_schema_subject == "zonal_stats"
    assert error.expected_schema and "item_id" in error.expected_schema["properties"]
    assert any(field.endswith("band") for field, _ in error.field_violations)


def test_change_detection_artifacts_download(client, world, tmp_path):
    result = client.analytics.change_detection(
        before_item_id=world.items[SCENES[0]],
        after_item_id=world.items[SCENES[1]],
        index_name="NDVI",
        change_threshold=0.1,
        geometry=AOI,
    )
    assert result.operation == "change_detection"
    assert sorted(artifact.key for artifact in result.outputs) == ["difference_cog", "quicklook_png"]
    for artifact in result.outputs:
        downloaded = client.download(artifact, tmp_path / artifact.key)
        assert downloaded.sha256 == artifact.sha256 and downloaded.size_bytes == artifact.size_bytes
        body = (tmp_path / artifact.key).read_bytes()
        assert len(body) == artifact.size_bytes and hashlib.sha256(body).hexdigest() == artifact.sha256
    assert (tmp_path / "quicklook_png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with rasterio.open(tmp_path / "difference_cog") as difference:
        assert difference.dtypes == ("float32",) and difference.count == 1


async def test_async_analytics(world):
    async with AsyncClient(world.server.address, world.tokens["alpha"]) as client:
        # Before the list is loaded, the attribute loads it when called.
        result = await client.analytics.zonal_stats(item_id=world.items[SCENES[0]], geometry=AOI, index_name="NDVI")
        assert result.operation == "zonal_stats" and result["zones"]
        assert "item_id" in inspect.signature(client.analytics.zonal_stats).parameters
        assert [op.name for op in await client.analytics.operations()]
        assert (await client.analytics.operation("time_series")).name == "time_series"


def test_submit_runs_the_call_as_a_job_with_the_synchronous_answer(client, world, tmp_path):
    params = {"item_id": world.items[SCENES[0]], "geometry": AOI, "index_name": "NDVI"}
    estimate = client.analytics.execute("zonal_stats", params, validate_only=True)
    assert estimate.pixels_to_read and not estimate.exceeds_sync_max_pixels and estimate.sync_max_pixels > 0
    job = client.analytics.submit("zonal_stats", params, project_id="alpha")
    done = job.wait()
    assert done.job_type_id == "analytics" and done.credits_reserved == 0
    result = done.output_artifacts[0]
    assert result.key == "result"
    client.download(result, tmp_path / "result.json")
    answer = json.loads((tmp_path / "result.json").read_text())
    assert answer["result"] == client.analytics.execute("zonal_stats", params).result


async def test_async_submit(world):
    async with AsyncClient(world.server.address, world.tokens["alpha"]) as client:
        params = {"item_id": world.items[SCENES[0]], "geometry": AOI, "index_name": "NDVI"}
        job = await client.analytics.submit("zonal_stats", params, project_id="alpha")
        done = await job.wait()
        assert [a.key for a in done.output_artifacts] == ["result"]
