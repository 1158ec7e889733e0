"""WorkerService: registration, assignments and output registration for workers."""

from __future__ import annotations

from collections.abc import AsyncIterator

from geopera.v1 import worker_pb2, worker_pb2_grpc
from grpc import aio

from server.api.calls import rpc_call
from server.errors import Code, DomainError


def _not_yet() -> DomainError:
    return DomainError(Code.UNIMPLEMENTED, "NOT_IMPLEMENTED", "workers are not supported by this server yet")


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    async def Connect(
        self, request_iterator: AsyncIterator[worker_pb2.ConnectRequest], context: aio.ServicerContext
    ) -> AsyncIterator[worker_pb2.ConnectResponse]:
        async with rpc_call(context, "Connect"):
            raise _not_yet()
            yield worker_pb2.ConnectResponse()  # pragma: no cover - makes this a generator

    async def ReportProgress(
        self, request: worker_pb2.ReportProgressRequest, context: aio.ServicerContext
    ) -> worker_pb2.ReportProgressResponse:
        async with rpc_call(context, "ReportProgress"):
            raise _not_yet()
        raise AssertionError("unreachable")

    async def ReportFailure(
        self, request: worker_pb2.ReportFailureRequest, context: aio.ServicerContext
    ) -> worker_pb2.ReportFailureResponse:
        async with rpc_call(context, "ReportFailure"):
            raise _not_yet()
        raise AssertionError("unreachable")

    async def ReleaseJob(
        self, request: worker_pb2.ReleaseJobRequest, context: aio.ServicerContext
    ) -> worker_pb2.ReleaseJobResponse:
        async with rpc_call(context, "ReleaseJob"):
            raise _not_yet()
        raise AssertionError("unreachable")

    async def RegisterOutputs(
        self, request_iterator: AsyncIterator[worker_pb2.RegisterOutputsRequest], context: aio.ServicerContext
    ) -> worker_pb2.RegisterOutputsResponse:
        async with rpc_call(context, "RegisterOutputs"):
            raise _not_yet()
        raise AssertionError("unreachable")
