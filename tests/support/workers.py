"""Real `geopera worker` processes for tests and benches."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc

from geopera.v1 import worker_pb2, worker_pb2_grpc
from tests.support.client import RpcFailure
from tests.support.process import ChildProcess
from tests.support.server import REPO

TEST_PLUGINS = "tests.support.job_plugins,geopera_kernel.worker.plugins"
# Job types raw test sessions (tests/jobs_support.RawWorker, hellos in tests) declare.
RAW_JOB_TYPES = ("money_decl", "promise_raw", "raw_auth_matrix", "raw_only", "raw_outputs", "raw_quota")


def granted_test_job_types() -> list[str]:
    """What the test (and bench) worker credential is granted: every job type
    of the plugins TEST_PLUGINS loads, and those of the raw test sessions."""
    from geopera_kernel.worker.plugins import builtin_plugins
    from tests.support.job_plugins import PLUGINS

    return sorted({plugin.job_type_id for plugin in [*PLUGINS, *builtin_plugins()]} | set(RAW_JOB_TYPES))


class WorkerProcess(ChildProcess):
    stop_timeout = 60.0

    def __init__(
        self,
        server: str,
        token: str,
        home: Path,
        *,
        capacity: int = 2,
        name: str = "",
        plugins: str = TEST_PLUGINS,
        grace: float = 30.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.server = server
        self.token = token
        self.home = home
        self.capacity = capacity
        self.name = name
        self.plugins = plugins
        self.grace = grace
        self.extra_args = extra_args or []
        self.log_path = home / f"worker-{name or 'w'}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
        # The test servers' analytics plugin methods (conftest.TEST_SERVER_ENV), so analytics jobs run them too.
        env.update({"GEOPERA_WORKER_TOKEN": self.token, "PYTHONUNBUFFERED": "1",
                    "GEOPERA_ANALYTICS_PLUGINS": "tests.support.analytics_plugins"})  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "geopera_kernel.worker.main",
                    "--server",
                    self.server,
                    "--capacity",
                    str(self.capacity),
                    "--plugins",
                    self.plugins,
                    "--name",
                    self.name or "test-worker",
                    "--grace",
                    str(self.grace),
                    *self.extra_args,
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._track()
        return self

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def connect_outcome(
    channel: grpc.Channel, token: str, messages: list[worker_pb2.ConnectRequest]
) -> RpcFailure | worker_pb2.ConnectResponse:
    """The first thing the real WorkerService answers to these messages on a Connect stream
    (the request side stays open until then): a response, or the failure."""
    stub = worker_pb2_grpc.WorkerServiceStub(channel)
    outbound: queue.Queue[worker_pb2.ConnectRequest | None] = queue.Queue()
    for message in messages:
        outbound.put(message)
    if not messages:
        outbound.put(None)
    done = threading.Event()

    def requests():
        while not done.is_set() and (message := outbound.get()) is not None:
            yield message

    call = stub.Connect(requests(), metadata=(("authorization", f"Bearer {token}"),), timeout=20)
    try:
        return next(iter(call))
    except grpc.RpcError as err:
        return RpcFailure.from_rpc_error(err)
    finally:
        done.set()
        outbound.put(None)
        call.cancel()
