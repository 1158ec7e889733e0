"""Registers servicers so that undecodable request bytes are a client error.

The generated `add_*Servicer_to_server` lets grpcio deserialize requests
before our code runs, and a corrupt message then surfaces as UNKNOWN. Here
requests arrive as bytes and are decoded inside the call, so a corrupt one
fails INVALID_ARGUMENT (reason `MALFORMED_REQUEST`) through the edge's one
error path (`geopera_kernel.server.edge.interceptor`). A method marked
`raw_bytes` (Execute) gets its request as bytes and decodes it itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from grpc import aio

from geopera_kernel.server.api.execute import reject_nul_characters
from geopera_kernel.server.errors import invalid_argument

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=Message)
_RAW_BYTES = "_geopera_raw_bytes"


def raw_bytes(impl: F) -> F:
    """Marks a unary method that takes its request as bytes and answers bytes: it
    is registered as it is, with no (de)serializing wrapper around it (one call
    layer less per call, on the hot path: Execute); it decodes with `decode`."""
    setattr(impl, _RAW_BYTES, True)
    return impl


def decode(cls: type[M], data: bytes) -> M:
    try:
        message = cls.FromString(data)
    except DecodeError as exc:
        raise invalid_argument(
            "MALFORMED_REQUEST", f"the request is not a valid {cls.DESCRIPTOR.full_name}", field="request"
        ) from exc
    reject_nul_characters(message, "request", data)
    return message


def _serializer(cls: type[Message]) -> Callable[[Any], bytes]:
    """Serializes a response message; a response the servicer already encoded
    (bytes, e.g. Execute's) goes out as it is."""
    serialize = cls.SerializeToString

    def encode(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serialize(response)

    return encode


def _wrap(method: MethodDescriptor, impl: Callable[..., Any]) -> grpc.RpcMethodHandler:
    if getattr(impl, _RAW_BYTES, False):
        assert not (method.client_streaming or method.server_streaming)
        return grpc.unary_unary_rpc_method_handler(impl)
    request_cls = message_factory.GetMessageClass(method.input_type)
    serialize = _serializer(message_factory.GetMessageClass(method.output_type))

    async def decoded_stream(raw: AsyncIterator[bytes]) -> AsyncIterator[Message]:
        async for data in raw:
            yield decode(request_cls, data)

    if method.client_streaming and method.server_streaming:

        async def stream_stream(raw: AsyncIterator[bytes], context: aio.ServicerContext) -> AsyncIterator[Message]:
            async for response in impl(decoded_stream(raw), context):
                yield response

        return grpc.stream_stream_rpc_method_handler(stream_stream, response_serializer=serialize)
    if method.client_streaming:

        async def stream_unary(raw: AsyncIterator[bytes], context: aio.ServicerContext) -> Any:
            return await impl(decoded_stream(raw), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, response_serializer=serialize)
    if method.server_streaming:

        async def unary_stream(data: bytes, context: aio.ServicerContext) -> AsyncIterator[Message]:
            async for response in impl(decode(request_cls, data), context):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, response_serializer=serialize)

    async def unary_unary(data: bytes, context: aio.ServicerContext) -> Any:
        return await impl(decode(request_cls, data), context)

    return grpc.unary_unary_rpc_method_handler(unary_unary, response_serializer=serialize)


def add_servicer(server: aio.Server, servicer: object, service: ServiceDescriptor) -> None:
    handlers = {method.name: _wrap(method, getattr(servicer, method.name)) for method in service.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
