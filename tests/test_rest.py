"""The HTTP/JSON projection: same operations, auth, errors and idempotency as
gRPC, job events as server-sent events, and an OpenAPI document generated from
the registry."""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.error
import urllib.request
from typing import Any

import pytest
from google.protobuf import json_format

from geopera.v1 import catalog_pb2
from geopera_kernel.server.rest.app import MAX_BODY_BYTES
from tests.conftest import SAMPLES
from tests.jobs_support import running_world
from tests.support.registry import REGISTRY


@pytest.fixture(scope="module")
def rest_world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("rest"), workers=1) as world:
        yield world


def call(world, path: str, body: Any = None, *, token: str | None = "alpha", headers: dict[str, str] | None = None,
         method: str = "POST", raw: bytes | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:  # fmt: skip
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(world.server.http_url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {world.tokens.get(token, token)}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}"), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def test_an_operation_over_http_equals_grpc(rest_world):
    status, body, headers = call(rest_world, "/v1/op/items.list", {"project_id": "alpha", "page_size": 3})
    assert status == 200 and headers["X-Request-Id"]
    grpc_result = rest_world.client("alpha").execute(
        "items.list", catalog_pb2.ItemsListParams(project_id="alpha", page_size=3)
    )
    assert body == json_format.MessageToDict(grpc_result, preserving_proto_field_name=True)
    item_id = body["items"][0]["id"]
    status, got, _ = call(rest_world, "/v1/op/items.get", {"item_id": item_id})
    assert status == 200 and got["item"]["id"] == item_id


@pytest.mark.parametrize(
    ("path", "body", "token", "status", "reason"),
    [
        ("/v1/op/items.list", {"project_id": "alpha"}, None, 401, "UNAUTHENTICATED"),
        ("/v1/op/items.list", {"project_id": "alpha"}, "gpk_nope", 401, "UNAUTHENTICATED"),
        ("/v1/op/items.lisst", {"project_id": "alpha"}, "alpha", 400, "UNKNOWN_OPERATION"),
        ("/v1/op/items.list", {"project_id": "beta"}, "alpha", 403, "PROJECT_ACCESS_DENIED"),
        ("/v1/op/items.get", {"item_id": "it_missing"}, "alpha", 404, "ITEM_NOT_FOUND"),
        ("/v1/op/items.list", {"project_id": "alpha", "bogus": 1}, "alpha", 400, "PARAMS_UNPARSEABLE"),
        ("/v1/op/items.list", [1, 2], "alpha", 400, "PARAMS_UNPARSEABLE"),
        ("/v1/op/items.list", {"project_id": "alpha", "bbox": [1, 2]}, "alpha", 400, "INVALID_BBOX"),
        ("/v1/op/workers.list", {}, "alpha", 403, "MISSING_SCOPE"),
    ],
)
def test_errors_are_json_with_the_usual_http_status(rest_world, path, body, token, status, reason):
    got_status, got, _ = call(rest_world, path, body, token=token)
    assert (got_status, got["reason"]) == (status, reason), got
    assert got["code"] and got["message"] and got["request_id"]


def test_a_body_that_is_not_json(rest_world):
    status, body, _ = call(rest_world, "/v1/op/items.list", raw=b"{not json")
    assert (status, body["reason"]) == (400, "PARAMS_UNPARSEABLE")


def test_a_body_over_the_size_limit_is_refused_not_a_server_error(rest_world):
    padding = "x" * (MAX_BODY_BYTES + 1024)
    status, body, _ = call(rest_world, "/v1/op/items.list", raw=json.dumps({"project_id": padding}).encode())
    assert (status, body["reason"]) == (400, "BODY_TOO_LARGE"), body


def test_invalid_job_params_are_422_with_the_expected_schema(rest_world):
    status, body, _ = call(
        rest_world,
        "/v1/op/processing.create",
        {"project_id": "alpha", "job_type_id": "test_cog", "input_params": {"steps": "x"}},
    )
    assert (status, body["reason"]) == (422, "INVALID_JOB_PARAMS")
    assert body["details"]["expected_schema"]["properties"]["name"]
    assert {v["field"] for v in body["details"]["field_violations"]} >= {"input_params.steps"}


def test_idempotency_key_header_behaves_like_the_grpc_metadata(rest_world):
    key = f"http-{secrets.token_hex(6)}"
    params = {"project_id": "alpha", "job_type_id": "test_noop", "input_params": {}}
    first = call(rest_world, "/v1/op/processing.create", params, headers={"Idempotency-Key": key})
    again = call(rest_world, "/v1/op/processing.create", params, headers={"Idempotency-Key": key})
    assert first[0] == again[0] == 200 and first[1] == again[1]
    other = call(
        rest_world, "/v1/op/processing.create", {**params, "input_params": {"note": "x"}},
        headers={"Idempotency-Key": key},
    )  # fmt: skip
    assert (other[0], other[1]["reason"]) == (400, "IDEMPOTENCY_KEY_REUSED")


def _sse(world, job_id: str, after: int = 0) -> list[dict[str, Any]]:
    request = urllib.request.Request(f"{world.server.http_url}/v1/jobs/{job_id}/events?after_sequence={after}")
    request.add_header("Authorization", f"Bearer {world.tokens['alpha']}")
    events, current = [], {}
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for raw_line in response:
            line = raw_line.decode().rstrip("\n")
            if not line:
                if current:
                    events.append(current)
                current = {}
                continue
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return events


def test_job_events_stream_as_server_sent_events(rest_world):
    status, created, _ = call(
        rest_world, "/v1/op/processing.create_and_dispatch",
        {"project_id": "alpha", "job_type_id": "test_cog", "input_params": {"name": "sse", "steps": 3}},
    )  # fmt: skip
    assert status == 200 and created["dispatch"]["accepted"]
    events = _sse(rest_world, created["job"]["id"])
    assert events[0]["event"] == "snapshot"
    assert events[-1]["event"] == "succeeded"
    assert events[-1]["data"]["job"]["status"] == "succeeded"
    ids = [int(e["id"]) for e in events]
    assert ids == list(range(ids[0], ids[-1] + 1))
    resumed = _sse(rest_world, created["job"]["id"], after=ids[1])
    assert [int(e["id"]) for e in resumed] == ids[2:]


def test_the_openapi_document_covers_the_registry(rest_world):
    status, document, _ = call(rest_world, "/v1/openapi.json", method="GET")
    assert status == 200 and document["openapi"].startswith("3.1")
    for operation in REGISTRY:
        post = document["paths"][f"/v1/op/{operation.name}"]["post"]
        ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[-1] in document["components"]["schemas"]
    text = json.dumps(document)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in document["components"]["schemas"], ref


def test_the_product_docs_clip_example_runs_with_curl(rest_world):
    aoi = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())["features"][0]["geometry"]
    body = {
        "source_item_id": rest_world.items["s2l1c_slovenia_20150711_bgrn"],
        "project_id": "alpha",
        "aoi_geometry": aoi,
        "asset_keys": ["data"],
        "output_name": "harbour_clip",
    }
    command = [
        "curl", "-s", "-X", "POST", f"{rest_world.server.http_url}/v1/op/clip.create_from_item",
        "-H", f"Authorization: Bearer {rest_world.tokens['alpha']}",
        "-H", "Content-Type: application/json",
        "-H", f"Idempotency-Key: c0ff-{secrets.token_hex(6)}",
        "-d", json.dumps(body),
    ]  # fmt: skip
    result = json.loads(subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout)
    assert result["assets_to_clip"] == 1 and result["asset_keys"] == ["data"]
    assert result["job"]["status"] == "dispatched"  # as the product docs write it


@pytest.mark.parametrize(("path", "method", "status"), [("/v1/nowhere", "GET", 404), ("/v1/op/items.list", "GET", 405)])
def test_unknown_routes_and_methods_answer_json(rest_world, path, method, status):
    got_status, body, _ = call(rest_world, path, method=method)
    assert got_status == status and body["reason"].startswith("HTTP_") and body["code"]


def test_invalid_analytics_params_are_422_with_the_expected_schema(rest_world):
    status, body, _ = call(rest_world, "/v1/op/analytics.execute",
                           {"operation": "zonal_stats", "params": {"index_name": "NDVI"}})  # fmt: skip
    assert (status, body["reason"]) == (422, "INVALID_ANALYTICS_PARAMS")
    assert "geometry" in body["details"]["expected_schema"]["properties"]
    assert any(v["field"] == "params.item_id" for v in body["details"]["field_violations"])


def test_the_product_docs_change_detection_example_runs_with_curl(rest_world):
    aoi = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())["features"][0]["geometry"]
    body = {
        "operation": "change_detection",
        "params": {
            "before_item_id": rest_world.items["s2l1c_slovenia_20150711_bgrn"],
            "after_item_id": rest_world.items["s2l1c_slovenia_20150909_bgrn"],
            "index_name": "NDVI",
            "change_threshold": 0.2,
            "geometry": aoi,
        },
    }
    command = [
        "curl", "-s", "-X", "POST", f"{rest_world.server.http_url}/v1/op/analytics.execute",
        "-H", f"Authorization: Bearer {rest_world.tokens['alpha']}",
        "-H", "Content-Type: application/json",
        "-d", json.dumps(body),
    ]  # fmt: skip
    result = json.loads(subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout)
    assert result["operation"] == "change_detection"
    assert {o["key"] for o in result["outputs"]} == {"difference_cog", "quicklook_png"}
    assert result["result"]["index_name"] == "NDVI" and result["result"]["compared_count"] > 0
