"""One request, four surfaces: gRPC, the Python SDK, HTTP/JSON and MCP are
projections of the same registry, so the same request answers the same (the
protobuf results of gRPC and the SDK read through the SDK's JSON view, which
is what HTTP and MCP answer: job statuses as words, analytics results in
their method's types and key order)."""

from __future__ import annotations

import json
import secrets
from typing import Any

import grpc
import pytest
from geopera_sdk import Client, GeoperaError, to_json

from geopera.v1 import analytics_pb2, processing_pb2
from tests.conftest import SAMPLES
from tests.jobs_support import running_world, struct
from tests.support.client import RpcFailure
from tests.support.mcp_client import McpClient, http_post

AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())


@pytest.fixture(scope="module")
def surfaces_world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("surfaces"), 1) as world:
        yield world


def _json(message: Any, output_schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return to_json(message, output_schema=output_schema)


def test_the_same_request_answers_the_same_on_every_surface(surfaces_world):
    world = surfaces_world
    grpc_client = world.client("alpha")
    sdk = Client(world.server.address, world.tokens["alpha"])
    mcp = McpClient(world.server.address, world.tokens["alpha"], world.home / "mcp-surfaces.log")
    try:
        # Analytics: zonal statistics of NDVI over the AOI.
        zonal = {"item_id": world.items["s2l1c_slovenia_20150711_bgrn"], "index_name": "NDVI", "geometry": AOI,
                 "percentiles": [10, 50, 90]}  # fmt: skip
        execute = {"operation": "zonal_stats", "params": zonal}
        schema = sdk.analytics.output_schema("zonal_stats")
        by_grpc = _json(
            grpc_client.execute(
                "analytics.execute", analytics_pb2.AnalyticsExecuteParams(operation="zonal_stats", params=struct(zonal))
            ),
            schema,
        )
        by_sdk = _json(sdk.execute("analytics.execute", execute), schema)
        status, by_http = http_post(world, "analytics.execute", execute)
        assert status == 200
        by_mcp = mcp.ok("analytics_zonal_stats", zonal)
        assert by_mcp == mcp.ok("analytics_execute", execute)
        assert by_grpc["result"]["zones"][0]["stats"]["count"] > 0
        assert by_grpc == by_sdk == by_http == by_mcp
        # The same text too: integers as integers, keys in the same order.
        assert len({json.dumps(body) for body in (by_grpc, by_sdk, by_http, by_mcp)}) == 1
        assert sdk.analytics.zonal_stats(**zonal).result == by_grpc["result"]

        # A spend with one explicit idempotency key: one job, whichever surface asks.
        key = f"surfaces-{secrets.token_hex(8)}"
        job = {"project_id": "alpha", "job_type_id": "test_noop", "input_params": {"note": "surfaces"}}
        params = processing_pb2.ProcessingCreateParams(
            project_id="alpha", job_type_id="test_noop", input_params=struct(job["input_params"])
        )
        created = {
            "grpc": _json(grpc_client.execute("processing.create", params, idempotency_key=key)),
            "sdk": _json(sdk.execute("processing.create", job, idempotency_key=key)),
            "http": http_post(world, "processing.create", job, headers={"Idempotency-Key": key})[1],
            "mcp": mcp.ok("processing_create", {**job, "idempotency_key": key}),
        }
        job_ids = {surface: body["job"]["id"] for surface, body in created.items()}
        assert len(set(job_ids.values())) == 1, job_ids
        assert all(body == created["grpc"] for body in created.values())
        assert created["grpc"]["job"]["status"] == "pending"

        # The same key with other params is refused on every surface.
        other = {**job, "input_params": {"note": "something else"}}
        refused: dict[str, tuple[str, str]] = {}
        with pytest.raises(RpcFailure) as grpc_error:
            grpc_client.execute(
                "processing.create",
                processing_pb2.ProcessingCreateParams(
                    project_id="alpha", job_type_id="test_noop", input_params=struct(other["input_params"])
                ),
                idempotency_key=key,
            )
        refused["grpc"] = (grpc_error.value.code.name, grpc_error.value.reason)
        with pytest.raises(GeoperaError) as sdk_error:
            sdk.execute("processing.create", other, idempotency_key=key)
        refused["sdk"] = (sdk_error.value.code.name, sdk_error.value.reason)
        status, body = http_post(world, "processing.create", other, headers={"Idempotency-Key": key})
        assert status == 400
        refused["http"] = (body["code"], body["reason"])
        body = mcp.error("processing_create", {**other, "idempotency_key": key})
        refused["mcp"] = (body["code"], body["reason"])
        assert set(refused.values()) == {("FAILED_PRECONDITION", "IDEMPOTENCY_KEY_REUSED")}, refused
        assert grpc_error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        mcp.close()
        sdk.close()
