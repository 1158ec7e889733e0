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
        if int(fields[1]) == parent_pid and fields[0] != "Z" and b"\0-m\0geopera_kernel.worker\0" in cmdline:
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


def test_the_banner_states_the_balance_and_scopes_as_they_are_after_a_restart(database_url, tmp_path):
    """After credits were spent, a restarted `--demo` server prints the balance left (not the
    first grant) and the scopes its token holds (not "every scope": it lacks admin)."""
    from geopera_sdk import Client

    server = ServerProcess(database_url=database_url, home=tmp_path, extra_args=["--demo"]).start()
    try:
        _wait_for(lambda: "credits available" in server.log(), 60, "no banner", server)
        assert "10000 credits available" in server.log()
        token = (tmp_path / "demo-token").read_text().strip()
        with Client(server.address, token) as sdk:
            item = next(iter(sdk.items.list("demo", collection_id="s2_slovenia")))
            job = sdk.jobs.create_and_dispatch("demo", "clip", {"source_item_id": item.id, "aoi_geometry": {
                "type": "Polygon", "coordinates": [[[14.555, 45.868], [14.56, 45.868], [14.56, 45.872],
                                                    [14.555, 45.872], [14.555, 45.868]]]}})  # fmt: skip
            sdk.jobs.wait(job.id, timeout=120)
            available = sdk.credits.balance("demo").available
        assert available < 10000
    finally:
        server.stop()
    restarted = ServerProcess(database_url=database_url, home=tmp_path, extra_args=["--demo"]).start()
    try:
        # The log file of the home is appended to: the restarted server's banner is the second.
        _wait_for(lambda: restarted.log().count("credits available") == 2, 60, "no banner", restarted)
        banner = [line for line in restarted.log().splitlines() if "credits available" in line][-1]
        assert f"(project 'demo', {available} credits available)" in banner
        scopes_line = [line for line in restarted.log().splitlines() if line.startswith("Demo token (")][-1]
        assert "admin" not in scopes_line and "every scope" not in scopes_line
        assert "catalog:read" in scopes_line and "processing:process" in scopes_line
    finally:
        restarted.stop()
