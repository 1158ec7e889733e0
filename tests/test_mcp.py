"""The MCP projection: `geopera mcp` spawned over stdio and driven with the
`mcp` client library against a real server and worker. The tools are the
registry's operations (scope-filtered), the analytics methods and jobs_wait;
results are the operations' results as proto3 JSON; errors are tool results
shaped like the HTTP projection's error bodies."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import jsonschema
import pytest
from google.protobuf import json_format

from geopera.v1 import analytics_pb2, catalog_pb2, credits_pb2
from geopera_kernel.server import auth as server_auth
from geopera_kernel.server.mcp.scopes import allows
from geopera_kernel.server.mcp.tools import IDEMPOTENCY_META_KEY, tool_name
from tests.conftest import SAMPLES, World
from tests.jobs_support import running_world
from tests.support.mcp_client import McpClient, http_post
from tests.support.registry import REGISTRY

AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
USER_SCOPES = frozenset(server_auth.USER_SCOPES)


@pytest.fixture(scope="module")
def mcp_world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("mcp"), 1, capacity=4) as world:
        yield world


@pytest.fixture(scope="module")
def mcp(mcp_world: World):
    client = McpClient(mcp_world.server.address, mcp_world.tokens["alpha"], mcp_world.home / "mcp-alpha.log")
    yield client
    client.close()


def _grpc(world: World, operation: str, params: Any) -> dict[str, Any]:
    result = world.client("alpha").execute(operation, params, timeout=60)
    return json_format.MessageToDict(result, preserving_proto_field_name=True)


def _methods(world: World) -> list[str]:
    listed = world.client("alpha").execute("analytics.operations.list", analytics_pb2.AnalyticsOperationsListParams())
    return [method.name for method in listed.operations]


def test_the_tools_are_the_registry_the_scopes_allow(mcp, mcp_world):
    tools = mcp.tools()
    expected = {tool_name(op.name) for op in REGISTRY if allows(USER_SCOPES, op.scope)}
    expected |= {"jobs_wait"} | {f"analytics_{name}" for name in _methods(mcp_world)}
    assert set(tools) == expected
    assert "workers_list" not in tools  # admin only: not offered to a user token
    assert "analytics_pixel_count" in tools  # a plugin method: no MCP change needed
    for name, tool in tools.items():
        assert "." not in name
        schema = tool.input_schema
        assert schema["type"] == "object", name
        jsonschema.Draft202012Validator.check_schema(schema)
        assert "#/components" not in json.dumps(schema), name  # self-contained
    for operation in REGISTRY:
        tool = tools.get(tool_name(operation.name))
        if tool is None:
            continue
        assert operation.description in tool.description and f"`{operation.scope}`" in tool.description
        assert tool.annotations.read_only_hint is (operation.side_effect == "read")
        properties = tool.input_schema["properties"]
        fields = {field.name for field in operation.params_type.DESCRIPTOR.fields}
        extra = {"idempotency_key"} if operation.idempotency_key else set()
        extra |= {"validate_only"} if operation.side_effect != "read" else set()
        assert set(properties) == fields | extra, operation.name
    assert "$defs" in tools["items_create"].input_schema  # AssetInput, referenced locally
    assert tools["processing_create"].input_schema["properties"]["input_params"]["type"] == "object"
    assert tools["jobs_wait"].input_schema["required"] == ["job_id"]


def test_a_narrow_token_sees_only_its_tools_and_hidden_ones_are_refused(mcp_world):
    token = mcp_world.make_token(scopes=["catalog:read"], projects=["alpha"])
    narrow = McpClient(mcp_world.server.address, token, mcp_world.home / "mcp-narrow.log")
    try:
        tools = narrow.tools()
        assert set(tools) == {tool_name(op.name) for op in REGISTRY if allows(frozenset({"catalog:read"}), op.scope)}
        assert "items_list" in tools and "auth_whoami" in tools and "jobs_wait" not in tools
        refused = narrow.error("credits_balance_get", {"project_id": "alpha"})
        assert (refused["code"], refused["reason"]) == ("PERMISSION_DENIED", "MISSING_SCOPE")
    finally:
        narrow.close()


def test_items_list_equals_grpc(mcp, mcp_world):
    got = mcp.ok("items_list", {"project_id": "alpha", "page_size": 3})
    assert got == _grpc(mcp_world, "items.list", catalog_pb2.ItemsListParams(project_id="alpha", page_size=3))
    assert len(got["items"]) == 3 and got["next_page_token"]
    item = mcp.ok("items_get", {"item_id": got["items"][0]["id"]})
    assert item["item"]["id"] == got["items"][0]["id"]


def test_spends_are_idempotent_with_a_key_and_get_a_fresh_key_without(mcp):
    key = f"mcp-test-{secrets.token_hex(6)}"
    params = {"project_id": "alpha", "job_type_id": "test_noop", "input_params": {"note": "mcp"}}
    first = mcp.call("processing_create", {**params, "idempotency_key": key})
    again = mcp.call("processing_create", {**params, "idempotency_key": key})
    assert not first.is_error and first.meta[IDEMPOTENCY_META_KEY] == key
    assert again.structured_content == first.structured_content  # the replay: same job
    reused = mcp.error("processing_create", {**params, "input_params": {"note": "other"}, "idempotency_key": key})
    assert (reused["code"], reused["reason"]) == ("FAILED_PRECONDITION", "IDEMPOTENCY_KEY_REUSED")
    one, two = mcp.call("processing_create", params), mcp.call("processing_create", params)
    assert one.structured_content["job"]["id"] != two.structured_content["job"]["id"]
    keys = {one.meta[IDEMPOTENCY_META_KEY], two.meta[IDEMPOTENCY_META_KEY]}
    assert len(keys) == 2 and key not in keys


def test_validate_only_prices_a_spend_without_spending_or_a_key(mcp, mcp_world):
    params = {"project_id": "alpha", "job_type_id": "test_noop", "input_params": {"note": "mcp priced"}}
    before = _grpc(mcp_world, "credits.balance.get", credits_pb2.CreditsBalanceGetParams(project_id="alpha"))
    priced = mcp.call("processing_create", {**params, "validate_only": True})
    assert not priced.is_error and IDEMPOTENCY_META_KEY not in (priced.meta or {})
    body = priced.structured_content
    assert not body["job"].get("id") and int(body["estimate"]["total_credits"]) == 1
    assert int(body["estimate"]["balance_after"]) == int(before["balance"]["available"]) - 1
    after = _grpc(mcp_world, "credits.balance.get", credits_pb2.CreditsBalanceGetParams(project_id="alpha"))
    assert after == before
    refused = mcp.error("processing_create", {**params, "validate_only": "yes"})
    assert (refused["code"], refused["reason"]) == ("INVALID_ARGUMENT", "INVALID_VALIDATE_ONLY")


def test_jobs_wait_follows_a_job_to_the_end(mcp):
    created = mcp.ok("processing_create_and_dispatch", {
        "project_id": "alpha", "job_type_id": "test_cog",
        "input_params": {"name": f"mcp_{secrets.token_hex(3)}", "steps": 4, "step_seconds": 0.1},
    })  # fmt: skip
    job_id = created["job"]["id"]
    progress: list[tuple[float, str | None]] = []
    waited = mcp.ok("jobs_wait", {"job_id": job_id, "timeout_seconds": 40}, progress=progress)
    assert waited["terminal"] is True and waited["status"] == "succeeded"
    assert waited["job"]["id"] == job_id and len(waited["job"]["output_item_ids"]) == 1
    assert progress and [value for value, _ in progress] == sorted({value for value, _ in progress})
    assert waited["job"] == mcp.ok("processing_jobs_get", {"job_id": job_id})["job"]
    # Waiting on an ended job answers its final snapshot at once.
    assert mcp.ok("jobs_wait", {"job_id": job_id})["job"]["status"] == "succeeded"


def test_jobs_wait_answers_at_its_timeout_while_the_job_runs(mcp):
    created = mcp.ok("processing_create_and_dispatch", {
        "project_id": "alpha", "job_type_id": "test_cog",
        "input_params": {"name": f"mcp_slow_{secrets.token_hex(3)}", "steps": 100, "step_seconds": 0.1},
    })  # fmt: skip
    job_id = created["job"]["id"]
    started = time.monotonic()
    waited = mcp.ok("jobs_wait", {"job_id": job_id, "timeout_seconds": 1})
    assert time.monotonic() - started < 5
    assert waited["terminal"] is False and waited["job"]["id"] == job_id
    cancelled = mcp.ok("processing_jobs_cancel", {"job_id": job_id, "reason": "test over"})
    assert cancelled["job"]["id"] == job_id
    assert mcp.ok("jobs_wait", {"job_id": job_id, "timeout_seconds": 30})["status"] == "cancelled"


def test_analytics_methods_are_tools(mcp, mcp_world):
    item_id = mcp_world.items["s2l1c_slovenia_20150711_bgrn"]
    params = {"item_id": item_id, "index_name": "NDVI", "geometry": AOI, "percentiles": [50]}
    tool = mcp.tools()["analytics_zonal_stats"]
    described = mcp.ok("analytics_operations_get", {"name": "zonal_stats"})["operation"]
    # The method's schema, plus the key analytics.execute honours (it is a write: methods store artifacts)
    # and validate_only.
    key_argument = tool.input_schema["properties"].pop("idempotency_key")
    validate_argument = tool.input_schema["properties"].pop("validate_only")
    assert tool.input_schema == described["input_schema"] and key_argument["type"] == "string"
    assert validate_argument["type"] == "boolean"
    assert tool.annotations.read_only_hint is False and tool.annotations.destructive_hint is False
    got = mcp.ok("analytics_zonal_stats", params)
    assert got["operation"] == "zonal_stats" and got["result"]["zones"][0]["stats"]["mean"] > 0
    assert got == mcp.ok("analytics_execute", {"operation": "zonal_stats", "params": params})
    grpc_params = analytics_pb2.AnalyticsExecuteParams(operation="zonal_stats")
    grpc_params.params.update(params)
    assert got == _grpc(mcp_world, "analytics.execute", grpc_params)
    keyed = mcp.ok("analytics_zonal_stats", {**params, "idempotency_key": "mcp-analytics-1"})
    assert keyed == got == mcp.ok("analytics_zonal_stats", {**params, "idempotency_key": "mcp-analytics-1"})
    counted = mcp.ok("analytics_pixel_count", {"item_id": item_id})
    assert counted["result"]["pixels"] > 0


def test_errors_are_tool_results_with_the_reason(mcp, mcp_world):
    invalid = mcp.error("analytics_zonal_stats", {"index_name": "NDVI"})
    assert (invalid["code"], invalid["reason"]) == ("INVALID_ARGUMENT", "INVALID_ANALYTICS_PARAMS")
    assert "geometry" in invalid["details"]["expected_schema"]["properties"]
    assert any(v["field"] == "params.item_id" for v in invalid["details"]["field_violations"])
    assert invalid["message"] and invalid["request_id"]

    missing = mcp.error("items_get", {"item_id": "it_missing"})
    assert (missing["code"], missing["reason"]) == ("NOT_FOUND", "ITEM_NOT_FOUND")
    # The same body the HTTP projection answers (but for the request id).
    status, http_body = http_post(mcp_world, "items.get", {"item_id": "it_missing"})
    assert status == 404
    assert {**http_body, "request_id": ""} == {**missing, "request_id": ""}

    assert mcp.error("items_list", {"project_id": "beta"})["reason"] == "PROJECT_ACCESS_DENIED"
    assert mcp.error("workers_list", {})["reason"] == "MISSING_SCOPE"  # not listed, refused by the kernel
    unparseable = mcp.error("items_list", {"project_id": "alpha", "bogus": 1})
    assert unparseable["reason"] == "PARAMS_UNPARSEABLE" and "project_id" in unparseable["message"]
    assert unparseable["details"]["expected_schema"]["title"] == "ItemsListParams"
    too_long = mcp.error("jobs_wait", {"job_id": "job_x", "timeout_seconds": 500})
    assert too_long["reason"] == "INVALID_TOOL_ARGUMENTS"
    assert too_long["details"]["field_violations"][0]["field"] == "timeout_seconds"
    assert mcp.error("jobs_wait", {"job_id": "job_missing"})["reason"] == "JOB_NOT_FOUND"
    assert mcp.error("items.list", {})["reason"] == "UNKNOWN_TOOL"
    bad_key = mcp.error(
        "processing_create", {"project_id": "alpha", "job_type_id": "test_noop", "idempotency_key": "a b"}
    )
    assert bad_key["reason"] == "INVALID_IDEMPOTENCY_KEY"
