"""What the commands that call a running kernel over gRPC (`geopera mcp`,
`geopera download`) share: the connection flags and the channel credentials."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

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
