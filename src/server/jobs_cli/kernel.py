"""What every `geopera jobs` subcommand shares: the channel, calling an
operation through `KernelService.Execute`, and turning a refusal into one
line on stderr and exit status 1."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from geopera_kernel.server.remote import KernelRefused, open_channel, token_of

if TYPE_CHECKING:
    import grpc
    from google.protobuf.message import Message


class Kernel:
    """A connection to the kernel with the caller's token."""

    def __init__(self, channel: grpc.Channel, token: str | None) -> None:
        from geopera.v1 import kernel_pb2_grpc

        self.stub = kernel_pb2_grpc.KernelServiceStub(channel)
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()

    def execute(
        self, operation: str, params: Message, result: Message, timeout: float = 60, idempotency_key: str = ""
    ) -> Any:
        import grpc

        from geopera.v1 import kernel_pb2

        request = kernel_pb2.ExecuteRequest(operation=operation)
        request.params.Pack(params)
        try:
            metadata = (*self.metadata, ("idempotency-key", idempotency_key)) if idempotency_key else self.metadata
            response = self.stub.Execute(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as err:
            raise KernelRefused.from_rpc(err) from None
        response.result.Unpack(result)
        return result


class UsageError(Exception):
    """A bad command line the parser could not see (exit status 2)."""


def as_json(message: Message) -> dict[str, Any]:
    from google.rpc import error_details_pb2  # noqa: F401 (a job's error details are ErrorInfo: JSON needs the type)

    from geopera_kernel.server.api import jsonview

    return jsonview.to_json(message)


def print_json(message: Message) -> None:
    print(json.dumps(as_json(message), indent=2, ensure_ascii=False))


def run_subcommand(run: Callable[[Kernel, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The subcommand with its channel, its errors as exit statuses."""

    def main(args: argparse.Namespace) -> int:

        try:
            channel = open_channel(args)
        except OSError as err:
            print(f"error: --ca-file: {err}", file=sys.stderr)
            return 2
        try:
            with channel:
                return run(Kernel(channel, token_of(args)), args)
        except UsageError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KernelRefused as err:
            hint = f" (is a kernel serving {args.server}?)" if err.code == "UNAVAILABLE" else ""
            print(f"error: {err}{hint}", file=sys.stderr)
            return 1
        except BrokenPipeError:
            return 1
        except KeyboardInterrupt:
            return 130

    return main
