"""What the commands that call a running kernel over gRPC (`geopera mcp`,
`geopera download`, `geopera jobs`) share: the connection flags, the channel,
and a refusal as a code and a reason."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """`--server`, `--token`, `--tls`, `--ca-file` (the first two default to
    GEOPERA_SERVER / GEOPERA_TOKEN)."""
    env = os.environ.get
    parser.add_argument(
        "--server", default=env("GEOPERA_SERVER", "127.0.0.1:50051"), help="kernel gRPC target [GEOPERA_SERVER]"
    )
    parser.add_argument("--token", help="bearer token [GEOPERA_TOKEN]")
    parser.add_argument("--tls", action="store_true", help="TLS to the kernel (system roots, or --ca-file)")
    parser.add_argument("--ca-file", help="PEM roots for --tls")


def token_of(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("GEOPERA_TOKEN") or None


def channel_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials when `--tls` or `--ca-file` asks for them, else None (plaintext)."""
    if not (args.tls or args.ca_file):
        return None
    import grpc  # here, not at the top: `geopera --help` stays quick

    roots = Path(args.ca_file).read_bytes() if args.ca_file else None
    return grpc.ssl_channel_credentials(roots)


USER_AGENT = "geopera-cli/0.1.0"


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """The channel to `--server`, TLS when asked; OSError when `--ca-file` cannot be read."""
    import grpc

    credentials = channel_credentials(args)
    options = [("grpc.primary_user_agent", USER_AGENT)]
    if credentials is not None:
        return grpc.secure_channel(args.server, credentials, options=options)
    return grpc.insecure_channel(args.server, options=options)


class KernelRefused(Exception):
    """A call the kernel refused or could not take (or a transfer that failed its
    checks): a gRPC status code name and a reason."""

    def __init__(self, code: str, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason

    @classmethod
    def from_rpc(cls, err: grpc.RpcError) -> KernelRefused:
        from geopera_kernel.server.edge.status import status_details

        call: Any = err  # a grpc.Call as well, as every RpcError a call raises
        code = call.code().name if call.code() is not None else "UNKNOWN"
        reason = status_details(call.trailing_metadata()).reason or code
        return cls(code, reason, call.details() or "")
