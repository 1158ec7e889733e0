"""The local worker of `geopera serve --demo`: it is there whenever the server
is, is started again if it dies, and does not outlive the server."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.server import ServerProcess


def _worker_children(parent_pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the ppid follows the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent_pid and fields[0] != "Z" and b"worker.main" in cmdline:
            found.append(int(entry.name))
    return found


def _wait_for(condition: Callable[[], object], timeout: float, what: str, server: ServerProcess) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout} s; server log:\n{server.log()[-4000:]}")


@pytest.fixture
def demo_server(database_url, tmp_path):
    server = ServerProcess(database_url=database_url, home=tmp_path, extra_args=["--demo"]).start()
    yield server
    server.stop()


def test_the_demo_worker_connects_and_is_started_again_after_it_dies(demo_server):
    assert demo_server.process is not None
    server_pid = demo_server.process.pid
    _wait_for(lambda: demo_server.log().count("connected as") >= 1, 60, "the worker did not connect", demo_server)
    (first,) = _worker_children(server_pid)

    os.kill(first, signal.SIGKILL)

    _wait_for(lambda: demo_server.log().count("connected as") >= 2, 60, "no new worker connected", demo_server)
    (second,) = _worker_children(server_pid)
    assert second != first
    assert "the local worker exited (code -9)" in demo_server.log()


def test_the_demo_worker_ends_with_a_killed_server(demo_server):
    assert demo_server.process is not None
    _wait_for(lambda: demo_server.log().count("connected as") >= 1, 60, "the worker did not connect", demo_server)
    (worker,) = _worker_children(demo_server.process.pid)

    demo_server.stop(signal.SIGKILL)

    def gone() -> bool:
        try:
            return Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    _wait_for(gone, 30, f"worker {worker} still running after its server was killed", demo_server)
