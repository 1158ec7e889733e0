"""Nothing a client can send gets INTERNAL or UNKNOWN: every operation of the
registry, called with hostile values in every field (generated from the
params descriptors), answers OK or a clear client error."""

from __future__ import annotations

import random

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tests.support.client import RpcFailure
from tests.support.registry import REGISTRY

HOSTILE_STRINGS = ["", " ", "x" * 5000, "\x00", "../../../etc/passwd", "it_' OR 1=1 --", "ü🙂", "%(id)s", "NaN"]
HOSTILE_INTS = [-1, 0, 2**31 - 1, -(2**31)]
HOSTILE_NUMBERS = [float("nan"), float("inf"), -1e308, 0.0, 1e-300]
HOSTILE_JSON = [
    {},
    {"type": "Polygon", "coordinates": "nope"},
    {"type": "FeatureCollection", "features": [None, 1, "x"]},
    {"nested": {"deeper": [[[[[]]]]]}},
    {"type": "Polygon", "coordinates": [[[0, 0], [1e300, 0], [0, 1], [0, 0]]]},
]


def _fill_struct(struct: struct_pb2.Struct, rng: random.Random) -> None:
    struct.update(rng.choice(HOSTILE_JSON))
    if rng.random() < 0.3:
        struct.fields["n"].number_value = rng.choice(HOSTILE_NUMBERS)


def _fill(message: Message, rng: random.Random, depth: int = 0) -> None:
    if message.DESCRIPTOR.full_name == "google.protobuf.Struct":
        _fill_struct(message, rng)  # type: ignore[arg-type]
        return
    if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        message.seconds = rng.choice([-62135596800, 0, 253402300799])  # type: ignore[attr-defined]
        return
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.2:
            continue
        values = range(rng.choice([1, 3])) if field.is_repeated else [None]
        for _ in values:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if depth > 3 or field.message_type.GetOptions().map_entry:
                    continue
                target = getattr(message, field.name).add() if field.is_repeated else getattr(message, field.name)
                _fill(target, rng, depth + 1)
                continue
            if field.type == FieldDescriptor.TYPE_STRING:
                value = rng.choice(HOSTILE_STRINGS)
            elif field.type == FieldDescriptor.TYPE_BOOL:
                value = rng.choice([True, False])
            elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
                value = rng.choice(HOSTILE_NUMBERS)
            elif field.type == FieldDescriptor.TYPE_ENUM:
                value = rng.choice([0, 1, 99])
            elif field.type == FieldDescriptor.TYPE_BYTES:
                value = b"\xff" * rng.choice([0, 10])
            else:
                value = rng.choice(HOSTILE_INTS)
            if field.is_repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)


@pytest.mark.parametrize("name", REGISTRY.names())
def test_hostile_params_never_get_internal(world, name):
    operation = REGISTRY.get(name)
    rng = random.Random(name)
    client = world.client("admin")
    for _ in range(12):
        params = operation.params_type()
        _fill(params, rng)
        try:
            client.execute(name, params, timeout=60)
        except RpcFailure as failure:
            assert failure.code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (name, params, failure)
            assert failure.has_error_info and failure.reason, failure


def test_nul_characters_in_any_request_are_a_client_error(world):
    from geopera.v1 import kernel_pb2

    client = world.client("admin")

    def upload():
        yield kernel_pb2.UploadAssetRequest(project_id="alpha", file_name="a\x00b", data=b"x", finish_write=True)

    with pytest.raises(grpc.RpcError) as info:
        client.stub.UploadAsset(upload(), metadata=client.metadata(), timeout=30)
    failure = RpcFailure.from_rpc_error(info.value)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CHARACTER")
    assert failure.violations[0][0] == "request.file_name"


@pytest.mark.parametrize(
    ("operation", "item_id", "where"),
    [
        ("items.get", "it_\x00", "params.item_id"),  # in the params: the Executor's check, on Execute's bytes
        ("items.get\x00", "it_1", "request.operation"),  # in the envelope: Execute's own decoding
    ],
)
def test_nul_characters_in_execute_are_a_client_error(world, operation, item_id, where):
    from geopera.v1 import catalog_pb2, kernel_pb2

    client = world.client("admin")
    request = kernel_pb2.ExecuteRequest(operation=operation)
    request.params.Pack(catalog_pb2.ItemsGetParams(item_id=item_id))
    with pytest.raises(grpc.RpcError) as info:
        client.stub.Execute(request, metadata=client.metadata(), timeout=30)
    failure = RpcFailure.from_rpc_error(info.value)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CHARACTER")
    assert failure.violations[0][0] == where
