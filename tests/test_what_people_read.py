"""What people read (issue 15): job statuses as the product docs write them,
analytics numbers in their method's types and key order, and lean listings,
on gRPC, HTTP/JSON, MCP and the Python SDK against a real server and worker."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from geopera_sdk import Client, to_json
from geopera_sdk import _jsonview as sdk_jsonview

from geopera.v1 import analytics_pb2, catalog_pb2, processing_pb2, resources_pb2
from geopera_kernel.analytics import registry as method_registry
from geopera_kernel.server.api import jsonview
from tests.conftest import SAMPLES, World
from tests.jobs_support import running_world, struct
from tests.support.mcp_client import McpClient, http_post

AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
WORDS = ["pending", "dispatched", "running", "succeeded", "failed", "cancelled"]


@pytest.fixture(scope="module")
def read_world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("read"), 1) as world:
        yield world


@pytest.fixture(scope="module")
def mcp(read_world: World):
    client = McpClient(read_world.server.address, read_world.tokens["alpha"], read_world.home / "mcp-read.log")
    yield client
    client.close()


@pytest.fixture(scope="module")
def sdk(read_world: World):
    with Client(read_world.server.address, read_world.tokens["alpha"]) as client:
        yield client


def _pending_job(world: World) -> str:
    status, body = http_post(
        world, "processing.create", {"project_id": "alpha", "job_type_id": "test_noop", "input_params": {"note": "n1"}},
        headers={"Idempotency-Key": f"read-{secrets.token_hex(6)}"},
    )  # fmt: skip
    assert status == 200, body
    assert body["job"]["status"] == "pending"  # as the product docs' HTTP examples answer
    return str(body["job"]["id"])


# -- 1. job statuses as the docs write them ---------------------------------------


def test_job_statuses_are_the_docs_words_on_http_mcp_and_the_sdk_json(read_world, mcp, sdk):
    job_id = _pending_job(read_world)
    status, got = http_post(read_world, "processing.jobs.get", {"job_id": job_id})
    assert status == 200 and got["job"]["status"] == "pending"
    assert mcp.ok("processing_jobs_get", {"job_id": job_id})["job"]["status"] == "pending"
    message = read_world.client("alpha").execute(
        "processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job_id)
    )
    assert message.job.status == resources_pb2.JOB_STATUS_PENDING  # gRPC keeps its enum
    assert to_json(message) == got
    # A spend answered on MCP, and the wait tool's status.
    created = mcp.ok(
        "processing_create_and_dispatch", {"project_id": "alpha", "job_type_id": "test_noop", "input_params": {}}
    )
    assert created["job"]["status"] in ("dispatched", "running", "succeeded")
    waited = mcp.ok("jobs_wait", {"job_id": created["job"]["id"], "timeout_seconds": 30})
    assert waited["status"] == "succeeded" and waited["job"]["status"] == "succeeded"


@pytest.mark.parametrize("spelling", ["pending", "JOB_STATUS_PENDING"])
def test_status_filters_accept_both_spellings(read_world, mcp, spelling):
    job_id = _pending_job(read_world)
    params = {"project_id": "alpha", "status": spelling, "page_size": 1000}
    status, body = http_post(read_world, "processing.jobs.list", params)
    assert status == 200, body
    assert job_id in {job["id"] for job in body["jobs"]}
    assert {job["status"] for job in body["jobs"]} == {"pending"}
    listed = mcp.ok("processing_jobs_list", params)
    assert job_id in {job["id"] for job in listed["jobs"]}
    assert {job["status"] for job in listed["jobs"]} == {"pending"}


def test_an_unknown_status_word_is_refused_clearly(read_world, mcp):
    status, body = http_post(read_world, "processing.jobs.list", {"project_id": "alpha", "status": "done"})
    assert status == 400 and body["reason"] == "PARAMS_UNPARSEABLE", body
    assert mcp.error("processing_jobs_list", {"project_id": "alpha", "status": "done"})["reason"] == (
        "PARAMS_UNPARSEABLE"
    )


def test_server_sent_events_carry_the_words(read_world):
    from tests.test_rest import _sse

    status, created = http_post(
        read_world, "processing.create_and_dispatch", {"project_id": "alpha", "job_type_id": "test_noop"},
        headers={"Idempotency-Key": f"read-{secrets.token_hex(6)}"},
    )  # fmt: skip
    assert status == 200, created
    events = _sse(read_world, created["job"]["id"])
    assert events[-1]["data"]["job"]["status"] == "succeeded"
    assert {event["data"]["job"]["status"] for event in events} <= set(WORDS)


def test_openapi_and_mcp_schemas_say_so(read_world, mcp):
    from tests.test_rest import call

    status, document, _ = call(read_world, "/v1/openapi.json", method="GET")
    assert status == 200
    schemas = document["components"]["schemas"]
    assert schemas["geopera_v1_Job"]["properties"]["status"]["enum"] == WORDS
    accepted = schemas["geopera_v1_ProcessingJobsListParams"]["properties"]["status"]["enum"]
    assert set(accepted) == set(WORDS) | {f"JOB_STATUS_{word.upper()}" for word in WORDS}
    tool = mcp.tools()["processing_jobs_list"]
    assert set(tool.input_schema["properties"]["status"]["enum"]) == set(accepted)


# -- 3. numbers keep their type ---------------------------------------------------


def _keys_in_schema_order(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> None:
    """Every object's keys in the order of its schema's properties (the rest after, sorted)."""
    schema = sdk_jsonview._branch(value, sdk_jsonview._resolve(schema, root), root)
    if isinstance(value, dict):
        listed = [k for k in schema.get("properties", {}) if k in value]
        rest = sorted(k for k in value if k not in schema.get("properties", {}))
        assert list(value) == listed + rest, (list(value), listed + rest)
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties"))
            _keys_in_schema_order(item, sub if isinstance(sub, dict) else {}, root)
    elif isinstance(value, list):
        for item in value:
            _keys_in_schema_order(item, schema.get("items", {}), root)


def test_analytics_integers_are_integers_and_keys_follow_the_model(read_world, mcp, sdk):
    zonal = {"item_id": read_world.items["s2l1c_slovenia_20150711_bgrn"], "index_name": "NDVI", "geometry": AOI,
             "percentiles": [10, 50, 90]}  # fmt: skip
    # The model's own schema (its key order is the model's field order); the
    # published one comes as a Struct, so it carries that order in `propertyOrdering`.
    schema = method_registry.output_schema("zonal_stats")
    published = sdk.analytics.output_schema("zonal_stats")
    assert published is not None and published["propertyOrdering"] == list(schema["properties"])
    zone = published["$defs"]["ZoneStatistics"]
    assert zone["propertyOrdering"] == list(schema["$defs"]["ZoneStatistics"]["properties"])
    assert "propertyOrdering" not in zone["properties"]  # a property named `properties` is no schema map
    status, by_http = http_post(read_world, "analytics.execute", {"operation": "zonal_stats", "params": zonal})
    assert status == 200, by_http
    result = by_http["result"]
    # The model says integer: the wire's doubles come back as ints, not 1755.0 / 0.0.
    assert type(result["pixels_read"]) is int and result["pixels_read"] > 0
    assert [type(zone["index"]) for zone in result["zones"]] == [int] * len(result["zones"])
    assert result["zones"][0]["index"] == 0
    assert all(type(zone["pixels_read"]) is int for zone in result["zones"])
    assert all(type(v) is int for v in result["bands_used"].values()) and result["bands_used"]
    # Numbers the model types `number` stay floats.
    assert type(result["resolution"]["x"]) is float
    _keys_in_schema_order(result, schema, schema)
    assert list(result) == [k for k in schema["properties"] if k in result]

    # The same text on every call and every JSON surface.
    _, again = http_post(read_world, "analytics.execute", {"operation": "zonal_stats", "params": zonal})
    assert json.dumps(again) == json.dumps(by_http)
    by_mcp = mcp.ok("analytics_zonal_stats", zonal)
    assert json.dumps(by_mcp) == json.dumps(by_http)
    by_sdk = sdk.analytics.zonal_stats(**zonal)
    assert json.dumps(by_sdk.result) == json.dumps(result)
    assert json.dumps(sdk.analytics.execute("zonal_stats", zonal).result) == json.dumps(result)
    grpc_result = read_world.client("alpha").execute(
        "analytics.execute", analytics_pb2.AnalyticsExecuteParams(operation="zonal_stats", params=struct(zonal))
    )
    assert json.dumps(to_json(grpc_result, output_schema=published)) == json.dumps(by_http)


SCHEMA = {
    "$defs": {
        "Zone": {
            "properties": {
                "index": {"type": "integer"},
                "value": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                "id": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
                "meta": {"type": "object", "additionalProperties": True},
            },
            "type": "object",
        }
    },
    "properties": {
        "count": {"type": "integer"},
        "mean": {"type": "number"},
        "band": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "by_name": {"type": "object", "additionalProperties": {"type": "integer"}},
        "zones": {"type": "array", "items": {"$ref": "#/$defs/Zone"}},
    },
    "type": "object",
}


@pytest.mark.parametrize("shape", [jsonview.shape, sdk_jsonview.shape], ids=["server", "sdk"])
def test_shape_types_and_orders_only_what_the_schema_says(shape):
    wire = {
        "zones": [{"value": 2.0, "meta": {"b": 1.0, "a": 2.5}, "index": 0.0, "id": 3.0, "extra": 1.0}],
        "by_name": {"RED": 3.0, "NIR": 4.0},
        "band": None,
        "mean": 0.5,
        "count": 1755.0,
        "unknown": 7.0,
    }
    got = shape(wire, SCHEMA)
    assert json.dumps(got) == json.dumps(
        {
            "count": 1755,
            "mean": 0.5,
            "band": None,
            "by_name": {"NIR": 4, "RED": 3},
            "zones": [{"index": 0, "value": 2.0, "id": 3, "meta": {"a": 2.5, "b": 1.0}, "extra": 1.0}],
            "unknown": 7.0,
        }
    )
    # A fractional number is never rounded, whatever the schema says.
    assert shape({"count": 2.5}, SCHEMA) == {"count": 2.5}
    assert type(shape({"count": 2.0**60}, SCHEMA)["count"]) is float  # beyond 2**53 a double is no exact integer


# -- 4. lean listings ---------------------------------------------------------------


def test_item_lists_are_basic_unless_full_is_asked(read_world, mcp, sdk):
    client = read_world.client("alpha")
    basic = client.execute("items.list", catalog_pb2.ItemsListParams(project_id="alpha", page_size=1000))
    full = client.execute(
        "items.list", catalog_pb2.ItemsListParams(project_id="alpha", page_size=1000, view=catalog_pb2.ITEM_VIEW_FULL)
    )
    assert [i.id for i in basic.items] == [i.id for i in full.items] and len(basic.items) >= 2
    assert basic.ByteSize() * 5 < full.ByteSize(), (basic.ByteSize(), full.ByteSize())
    for lean, whole in zip(basic.items, full.items, strict=True):
        assert (lean.name, lean.collection_id, lean.project_id, list(lean.bbox), lean.datetime) == (
            whole.name, whole.collection_id, whole.project_id, list(whole.bbox), whole.datetime,
        )  # fmt: skip
        assert sorted(lean.assets) == sorted(whole.assets)
        assert not lean.HasField("geometry") and not lean.HasField("properties")
        for key, asset in lean.assets.items():
            assert (asset.href, asset.media_type) == (whole.assets[key].href, whole.assets[key].media_type)
            assert not asset.bands and not asset.HasField("grid") and not asset.HasField("render")
        got = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=whole.id)).item
        assert got == whole  # FULL is what items.get answers
    # The same views on HTTP, MCP and the SDK.
    _, by_http = http_post(read_world, "items.list", {"project_id": "alpha", "page_size": 1000})
    assert "geometry" not in by_http["items"][0] and "bands" not in next(iter(by_http["items"][0]["assets"].values()))
    _, by_http_full = http_post(
        read_world, "items.list", {"project_id": "alpha", "page_size": 1000, "view": "ITEM_VIEW_FULL"}
    )
    assert by_http_full["items"][0]["geometry"]
    by_mcp = mcp.ok("items_list", {"project_id": "alpha", "page_size": 1000})
    assert by_mcp == by_http
    assert (
        "geometry"
        in mcp.ok("items_list", {"project_id": "alpha", "page_size": 1, "view": "ITEM_VIEW_FULL"})["items"][0]
    )
    assert [i.id for i in sdk.items.list("alpha")] == [i.id for i in basic.items]
    assert all(i.HasField("geometry") for i in sdk.items.list("alpha", view="full"))
    assert not any(i.HasField("geometry") for i in sdk.items.list("alpha", view="basic"))
    status, refused = http_post(read_world, "items.list", {"project_id": "alpha", "view": 9})
    assert status == 400 and refused["reason"] == "INVALID_VIEW"


def test_job_lists_are_basic_unless_full_is_asked(read_world, sdk):
    job_id = _pending_job(read_world)
    params = {"project_id": "alpha", "status": "pending", "page_size": 1000}
    _, basic = http_post(read_world, "processing.jobs.list", params)
    _, full = http_post(read_world, "processing.jobs.list", {**params, "view": "JOB_VIEW_FULL"})
    lean = next(job for job in basic["jobs"] if job["id"] == job_id)
    whole = next(job for job in full["jobs"] if job["id"] == job_id)
    assert "input_params" not in lean and whole["input_params"] == {"note": "n1"}
    assert {k: v for k, v in whole.items() if k != "input_params"} == lean
    _, got = http_post(read_world, "processing.jobs.get", {"job_id": job_id})
    assert got["job"] == whole
    listed = {job.id: job for job in sdk.jobs.list("alpha", status="pending", view="full")}
    assert listed[job_id].proto.input_params.fields["note"].string_value == "n1"
    listed = {job.id: job for job in sdk.jobs.list("alpha", status="pending")}
    assert not listed[job_id].proto.HasField("input_params")
