"""A real `geopera serve` process on a free port, for tests and benches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc

from tests.support.process import ChildProcess

REPO = Path(__file__).resolve().parents[2]


class ServerProcess(ChildProcess):
    def __init__(
        self,
        *,
        database_url: str | None,
        home: Path,
        extra_env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        http_listen: str | None = "127.0.0.1:0",
    ) -> None:
        """``http_listen`` None: no --http-listen flag (GEOPERA_HTTP_LISTEN or the default decides)."""
        self.home = home
        self.database_url = database_url
        self.log_path = home / "server.log"
        self.port_file = home / "port"
        self._extra_env = extra_env or {}
        self._extra_args = extra_args or []
        self._http_args = ["--http-listen", http_listen] if http_listen is not None else []
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.http_port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 90.0) -> ServerProcess:
        """Launch and wait until the server is ready (it writes the port file)."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> ServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        self.port_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
        env.update({"GEOPERA_HOME": str(self.home), "PYTHONUNBUFFERED": "1", **self._extra_env})
        if self.database_url:
            env["GEOPERA_DATABASE_URL"] = self.database_url
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "geopera_kernel.server.cli", "serve", "--listen", "127.0.0.1:0",
                 "--port-file", str(self.port_file), *self._http_args, *self._extra_args],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._track()
        return self

    def wait_listening(self, timeout: float = 30.0) -> int:
        """The port, as soon as the server listens (before it is ready)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log().splitlines():
                if '"listening on' in line:
                    return int(json.loads(line)["msg"].split(":")[-1].split()[0])
            time.sleep(0.05)
        raise RuntimeError(f"server not listening after {timeout} s:\n{self.log()}")

    def wait_ready(self, timeout: float = 90.0) -> ServerProcess:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.port_file.exists():
                grpc_port, http_port = self.port_file.read_text().split()
                self.port, self.http_port = int(grpc_port), int(http_port)
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)
