"""The transport edge is one place: every RPC of every kernel service goes
through the one interceptor (`geopera_kernel.server.edge.interceptor`), so each one, whatever
its shape (unary, client stream, server stream, both), answers a bad token the
same way: UNAUTHENTICATED with one ErrorInfo carrying the request id, the
`x-request-id` trailer, and one access log line. Health and reflection pass
through untouched."""

from __future__ import annotations

import json
import re
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from geopera.v1 import kernel_pb2, worker_pb2
from geopera_kernel.server.app import SERVICE_NAMES
from tests.support.client import RpcFailure

METHODS = [
    method
    for file in (kernel_pb2.DESCRIPTOR, worker_pb2.DESCRIPTOR)
    for service in file.services_by_name.values()
    for method in service.methods
]
UNKNOWN_TOKEN = "Bearer gpk_" + "x" * 43


def _call(channel: grpc.Channel, method, metadata: list[tuple[str, str]]) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.client_streaming and method.server_streaming:
        list(channel.stream_stream(path)(iter([b""]), metadata=metadata, timeout=10))
    elif method.client_streaming:
        channel.stream_unary(path)(iter([b""]), metadata=metadata, timeout=10)
    elif method.server_streaming:
        list(channel.unary_stream(path)(b"", metadata=metadata, timeout=10))
    else:
        channel.unary_unary(path)(b"", metadata=metadata, timeout=10)


def _access_lines(world, request_id: str, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [
            json.loads(raw)
            for raw in world.server.log().splitlines()
            if f'"request_id":"{request_id}"' in raw and '"logger":"geopera.access"' in raw
        ]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_the_edge_guards_every_method_of_the_kernel_services():
    assert {m.containing_service.full_name for m in METHODS} == set(SERVICE_NAMES)
    assert {(m.client_streaming, m.server_streaming) for m in METHODS} == {
        (False, False), (True, False), (False, True), (True, True),
    }  # fmt: skip


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_an_unknown_token_is_refused_at_the_edge_on_every_rpc(world, method):
    request_id = f"edge-{method.name}"
    with pytest.raises(grpc.RpcError) as info:
        _call(world.channel, method, [("authorization", UNKNOWN_TOKEN), ("x-request-id", request_id)])
    failure = RpcFailure.from_rpc_error(info.value)
    assert (failure.code, failure.reason, failure.domain) == (
        grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", "geopera.v1",
    )  # fmt: skip
    assert failure.metadata["request_id"] == request_id
    assert ("x-request-id", request_id) in tuple(info.value.trailing_metadata())
    (line,) = _access_lines(world, request_id)
    assert (line["rpc"], line["code"], line["principal"]) == (method.name, "UNAUTHENTICATED", "")


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_without_a_request_id_the_edge_makes_one(world, method):
    with pytest.raises(grpc.RpcError) as info:
        _call(world.channel, method, [])
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    trailers = dict(info.value.trailing_metadata())
    assert re.fullmatch(r"req_[0-9a-f]{16}", trailers["x-request-id"])
    assert RpcFailure.from_rpc_error(info.value).metadata["request_id"] == trailers["x-request-id"]


def test_health_passes_through_the_edge_without_a_token(world):
    stub = health_pb2_grpc.HealthStub(world.channel)
    for service in ("", *SERVICE_NAMES):
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_a_refused_execute_still_names_its_operation_in_the_access_log(world):
    request = kernel_pb2.ExecuteRequest(operation="items.get")
    with pytest.raises(grpc.RpcError) as info:
        world.channel.unary_unary("/geopera.v1.KernelService/Execute")(
            request.SerializeToString(),
            metadata=[("authorization", UNKNOWN_TOKEN), ("x-request-id", "edge-named")],
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    (line,) = _access_lines(world, "edge-named")
    assert (line["operation"], line["code"]) == ("items.get", "UNAUTHENTICATED")
