"""A bare grpc.aio peer: one unary-unary method that returns the request bytes.

Run as its own process (`python -m bench.echo --port-file PATH`); it uses the
kernel's server options and runtime settings (gc.freeze() once started), no
interceptors, no proto, identity (de)serializers, so it is the ceiling a
grpc.aio handler can reach on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc import aio

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"
REPO = Path(__file__).resolve().parents[1]


async def _echo(request: bytes, context: aio.ServicerContext) -> bytes:
    return request


async def serve(listen: str, port_file: Path) -> None:
    from geopera_kernel.server.app import server_options
    from geopera_kernel.server.config import Settings

    server = aio.server(options=server_options(Settings()))
    handler = grpc.method_handlers_generic_handler(SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(listen)
    await server.start()
    gc.freeze()  # as the kernel's server does once started: the same runtime settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(port_file)
    await stop.wait()
    await server.stop(1)


class EchoProcess:
    """The echo server in a child process on a free loopback port."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port_file = home / "echo.port"
        self.log_path = home / "echo.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> EchoProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        self.port_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.echo", "--listen", "127.0.0.1:0", "--port-file", str(self.port_file)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.port_file.exists():
                self.port = int(self.port_file.read_text())
                return self
            if self.process.poll() is not None:
                log_text = self.log_path.read_text(errors="replace")
                raise RuntimeError(f"echo server exited with {self.process.returncode}:\n{log_text}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"echo server not ready after {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--port-file", required=True, type=Path)
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
