"""A minimal synchronous client over the generated stubs, for tests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from geopera.v1 import errors_pb2, kernel_pb2, kernel_pb2_grpc
from geopera_kernel.server.api.registry import message_base_name


@dataclass
class RpcFailure(Exception):
    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[tuple[str, str]] = field(default_factory=list)
    expected_schema: errors_pb2.ExpectedSchema | None = None
    has_error_info: bool = False

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> RpcFailure:
        failure = cls(err.code(), err.details() or "")
        # A blocking call's error is also its grpc.Call, which from_call reads.
        status = rpc_status.from_call(err) if isinstance(err, grpc.Call) else None
        if status is None:
            return failure
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                failure.reason, failure.domain = info.reason, info.domain
                failure.metadata = dict(info.metadata)
                failure.has_error_info = True
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                failure.violations = [(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(errors_pb2.ExpectedSchema.DESCRIPTOR):
                schema = errors_pb2.ExpectedSchema()
                detail.Unpack(schema)
                failure.expected_schema = schema
        return failure


def result_type_for(operation: str) -> type[Message]:
    from google.protobuf import symbol_database

    name = "geopera.v1." + message_base_name(operation) + "Result"
    return symbol_database.Default().GetSymbol(name)


class KernelClient:
    def __init__(self, channel: grpc.Channel, token: str | None) -> None:
        self.channel = channel
        self.stub = kernel_pb2_grpc.KernelServiceStub(channel)
        self.token = token

    def metadata(self, **extra: str) -> tuple[tuple[str, str], ...]:
        md = [(k.replace("_", "-"), v) for k, v in extra.items()]
        if self.token is not None:
            md.append(("authorization", f"Bearer {self.token}"))
        return tuple(md)

    def execute_raw(
        self, request: kernel_pb2.ExecuteRequest, timeout: float = 30, **md: str
    ) -> kernel_pb2.ExecuteResponse:
        try:
            return self.stub.Execute(request, metadata=self.metadata(**md), timeout=timeout)
        except grpc.RpcError as err:
            raise RpcFailure.from_rpc_error(err) from None

    def execute(
        self, operation: str, params: Message, timeout: float = 30, *, validate_only: bool = False, **md: str
    ) -> Message:
        packed = any_pb2.Any()
        packed.Pack(params)
        response = self.execute_raw(
            kernel_pb2.ExecuteRequest(operation=operation, params=packed, validate_only=validate_only),
            timeout=timeout,
            **md,
        )
        result = result_type_for(operation)()
        assert response.result.Unpack(result), response.result.type_url
        return result

    def upload(
        self,
        project_id: str,
        data: bytes,
        *,
        chunk: int = 64 << 10,
        file_name: str = "x.tif",
        finish: bool = True,
        sha256: str | None = None,
    ) -> kernel_pb2.UploadAssetResponse:
        def requests() -> Iterator[kernel_pb2.UploadAssetRequest]:
            offset = 0
            first = True
            pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
            for n, piece in enumerate(pieces):
                message = kernel_pb2.UploadAssetRequest(write_offset=offset, data=piece)
                if first:
                    message.project_id = project_id
                    message.file_name = file_name
                    message.total_size = len(data)
                    message.sha256 = sha256 if sha256 is not None else hashlib.sha256(data).hexdigest()
                    first = False
                message.finish_write = finish and n == len(pieces) - 1
                offset += len(piece)
                yield message

        try:
            return self.stub.UploadAsset(requests(), metadata=self.metadata(), timeout=60)
        except grpc.RpcError as err:
            raise RpcFailure.from_rpc_error(err) from None

    def download(self, resource_name: str, **kwargs: int) -> tuple[bytes, kernel_pb2.DownloadAssetResponse]:
        try:
            parts = list(
                self.stub.DownloadAsset(
                    kernel_pb2.DownloadAssetRequest(resource_name=resource_name, **kwargs),
                    metadata=self.metadata(),
                    timeout=60,
                )
            )
        except grpc.RpcError as err:
            raise RpcFailure.from_rpc_error(err) from None
        return b"".join(p.data for p in parts), parts[0]
