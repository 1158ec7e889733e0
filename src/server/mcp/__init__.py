"""The MCP projection of the operation registry: `geopera mcp` runs an MCP
server over stdio that calls a kernel over gRPC with the caller's token.

Kept light: the `mcp` SDK is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--server", default=env("GEOPERA_SERVER", "127.0.0.1:50051"), help="kernel gRPC target [GEOPERA_SERVER]"
    )
    parser.add_argument("--token", help="bearer token [GEOPERA_TOKEN]")
    parser.add_argument("--tls", action="store_true", help="TLS to the kernel (system roots, or --ca-file)")
    parser.add_argument("--ca-file", help="PEM roots for --tls")
    parser.add_argument("--log-level", default=env("GEOPERA_MCP_LOG_LEVEL", "WARNING"),
                        help="stderr log level [GEOPERA_MCP_LOG_LEVEL, WARNING]")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    import asyncio

    import grpc

    from geopera_kernel.raster.logs import configure_logging
    from geopera_kernel.server.api.operations import build_registry
    from geopera_kernel.server.mcp.app import serve_stdio

    configure_logging(args.log_level)  # stderr: stdout carries the protocol
    token = args.token or os.environ.get("GEOPERA_TOKEN") or None
    if not token:
        print("geopera mcp: no token (--token or GEOPERA_TOKEN); every call will fail UNAUTHENTICATED",
              file=sys.stderr)  # fmt: skip
    credentials = None
    if args.tls or args.ca_file:
        roots = Path(args.ca_file).read_bytes() if args.ca_file else None
        credentials = grpc.ssl_channel_credentials(roots)
    try:
        asyncio.run(serve_stdio(args.server, token, build_registry(), credentials=credentials))
    except KeyboardInterrupt:
        pass
    return 0
