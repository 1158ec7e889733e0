"""The Execute envelope: operation lookup, @type checks, and the rich errors."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import any_pb2, struct_pb2

from geopera.v1 import catalog_pb2, kernel_pb2
from tests.support.client import RpcFailure


def _execute_raw(world, request, **md):
    with pytest.raises(RpcFailure) as info:
        world.client("alpha").execute_raw(request, **md)
    failure = info.value
    assert failure.code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), failure
    assert failure.has_error_info and failure.domain == "geopera.v1"
    return failure


def _any(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def test_unknown_operation_is_invalid_argument_and_lists_the_known_ones(world):
    request = kernel_pb2.ExecuteRequest(operation="items.lisst", params=_any(catalog_pb2.ItemsListParams()))
    failure = _execute_raw(world, request)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_OPERATION")
    assert "items.list" in failure.metadata["known_operations"].split(", ")
    assert failure.violations[0][0] == "operation"


def test_empty_operation(world):
    failure = _execute_raw(world, kernel_pb2.ExecuteRequest(params=_any(catalog_pb2.ItemsListParams())))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "OPERATION_REQUIRED")


def test_wrong_params_type(world):
    request = kernel_pb2.ExecuteRequest(operation="items.list", params=_any(catalog_pb2.ItemsGetParams()))
    failure = _execute_raw(world, request)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PARAMS_TYPE_MISMATCH")
    assert failure.metadata["expected_type"] == "type.googleapis.com/geopera.v1.ItemsListParams"
    assert failure.violations[0][0] == "params.@type"


def test_missing_params(world):
    failure = _execute_raw(world, kernel_pb2.ExecuteRequest(operation="items.list"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PARAMS_TYPE_MISMATCH")


def test_a_foreign_type_url(world):
    params = any_pb2.Any(
        type_url="type.googleapis.com/google.protobuf.Struct", value=struct_pb2.Struct().SerializeToString()
    )
    failure = _execute_raw(world, kernel_pb2.ExecuteRequest(operation="items.list", params=params))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PARAMS_TYPE_MISMATCH")


def test_unparseable_params_bytes(world):
    params = any_pb2.Any(type_url="type.googleapis.com/geopera.v1.ItemsListParams", value=b"\x0a\xff\xff\xff")
    failure = _execute_raw(world, kernel_pb2.ExecuteRequest(operation="items.list", params=params))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PARAMS_UNPARSEABLE")


def test_empty_params_get_field_errors(world):
    failure = _execute_raw(
        world, kernel_pb2.ExecuteRequest(operation="items.list", params=_any(catalog_pb2.ItemsListParams()))
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PROJECT_ID_REQUIRED")
    assert failure.violations == [("project_id", "project_id is required")]
    failure = _execute_raw(
        world, kernel_pb2.ExecuteRequest(operation="items.get", params=_any(catalog_pb2.ItemsGetParams()))
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "ITEM_ID_REQUIRED")


@pytest.mark.parametrize(
    ("params", "reason", "field"),
    [
        (catalog_pb2.ItemsListParams(project_id="alpha", bbox=[1, 2, 3]), "INVALID_BBOX", "bbox"),
        (catalog_pb2.ItemsListParams(project_id="alpha", bbox=[10, 50, 5, 40]), "INVALID_BBOX", "bbox"),
        (catalog_pb2.ItemsListParams(project_id="alpha", page_size=5000), "INVALID_PAGE_SIZE", "page_size"),
        (
            catalog_pb2.ItemsListParams(project_id="alpha", page_token="garbage!"),
            "INVALID_PAGE_TOKEN",
            "page_token",
        ),
    ],
)
def test_bad_list_arguments(world, params, reason, field):
    failure = _execute_raw(world, kernel_pb2.ExecuteRequest(operation="items.list", params=_any(params)))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert failure.violations[0][0] == field


def test_response_carries_the_request_id(world):
    client = world.client("alpha")
    request = kernel_pb2.ExecuteRequest(operation="projects.list", params=_any(catalog_pb2.ProjectsListParams()))
    _, call = client.stub.Execute.with_call(request, metadata=client.metadata(x_request_id="my-req-42"))
    assert ("x-request-id", "my-req-42") in call.trailing_metadata()


def test_error_metadata_carries_the_request_id(world):
    failure = _execute_raw(world, kernel_pb2.ExecuteRequest(operation="nope"), x_request_id="trace-7")
    assert failure.metadata["request_id"] == "trace-7"


def test_one_access_log_line_per_call_without_tokens(world):
    client = world.client("alpha")
    request = kernel_pb2.ExecuteRequest(operation="projects.list", params=_any(catalog_pb2.ProjectsListParams()))
    client.stub.Execute(request, metadata=client.metadata(x_request_id="log-probe-1"))
    lines = [json.loads(line) for line in world.server.log().splitlines() if '"log-probe-1"' in line]
    assert len(lines) == 1
    entry = lines[0]
    assert entry["operation"] == "projects.list"
    assert entry["code"] == "OK"
    assert entry["principal"].startswith("tok_")
    assert entry["duration_ms"] >= 0
    for token in world.tokens.values():
        assert token not in world.server.log()


def test_deadline_is_honoured(world):
    client = world.client("alpha")
    request = kernel_pb2.ExecuteRequest(
        operation="items.list", params=_any(catalog_pb2.ItemsListParams(project_id="alpha"))
    )
    with pytest.raises(grpc.RpcError) as info:
        client.stub.Execute(request, metadata=client.metadata(), timeout=0.000001)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize(
    ("method", "streaming"),
    [
        ("/geopera.v1.KernelService/Execute", False),
        ("/geopera.v1.KernelService/WatchJob", False),
        ("/geopera.v1.KernelService/DownloadAsset", False),
        ("/geopera.v1.KernelService/UploadAsset", True),
        ("/geopera.v1.WorkerService/RegisterOutputs", True),
        ("/geopera.v1.WorkerService/ReportProgress", False),
    ],
)
def test_corrupt_request_bytes_are_invalid_argument(world, method, streaming):
    garbage = b"\x0a\xff\xff\xff\xff"
    metadata = world.client("alpha").metadata()
    with pytest.raises(grpc.RpcError) as info:
        if streaming:
            world.channel.stream_unary(method)(iter([garbage]), metadata=metadata, timeout=10)
        elif method.endswith(("WatchJob", "DownloadAsset")):
            list(world.channel.unary_stream(method)(garbage, metadata=metadata, timeout=10))
        else:
            world.channel.unary_unary(method)(garbage, metadata=metadata, timeout=10)
    failure = RpcFailure.from_rpc_error(info.value)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
