"""The MCP projection of the operation registry: `geopera mcp` runs an MCP
server over stdio that calls a kernel over gRPC with the caller's token.

Kept light: the `mcp` SDK is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from geopera_kernel.server.remote import add_connection_arguments

    add_connection_arguments(parser)
    env = os.environ.get
    parser.add_argument("--log-level", default=env("GEOPERA_MCP_LOG_LEVEL", "WARNING"),
                        help="stderr log level [GEOPERA_MCP_LOG_LEVEL, WARNING]")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    import asyncio

    from geopera_kernel.raster.logs import configure_logging
    from geopera_kernel.raster.tracing import configure_tracing, shutdown_tracing
    from geopera_kernel.server.api.operations import build_registry
    from geopera_kernel.server.mcp.app import serve_stdio
    from geopera_kernel.server.remote import channel_credentials, token_of

    configure_logging(args.log_level)  # stderr: stdout carries the protocol
    token = token_of(args)
    if not token:
        print("geopera mcp: no token (--token or GEOPERA_TOKEN); every call will fail UNAUTHENTICATED",
              file=sys.stderr)  # fmt: skip
    credentials = channel_credentials(args)
    try:
        configure_tracing("geopera-mcp")  # OTEL_*: a span per tool call, its context sent on to the kernel
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        asyncio.run(serve_stdio(args.server, token, build_registry(), credentials=credentials))
    except KeyboardInterrupt:
        pass
    finally:
        shutdown_tracing()
    return 0
