"""Starting and stopping (issue 10, hole 8): a fresh server starts its embedded
PostgreSQL before gRPC has any thread (initdb forked into gRPC's threads
aborted now and then), and a second server on a taken port fails at once with
one clear line instead of sharing the port or printing a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.server import REPO, ServerProcess

# The names gRPC's C core gives its threads (/proc/<pid>/task/<tid>/comm).
GRPC_THREAD_PREFIXES = ("event_engine", "grpc", "lifeguard")
POSTGRES_TOOLS = ("initdb", "pg_ctl")


def _children(parent_pid: int) -> list[str]:
    """Command names of the live direct children of a process."""
    names = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
        state, ppid = rest.split()[:2]
        if int(ppid) == parent_pid and state != "Z":
            names.append(comm)
    return names


def _thread_names(pid: int) -> list[str]:
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            continue
    return names


def test_a_fresh_demo_server_runs_initdb_before_grpc_has_a_thread(tmp_path):
    """`geopera serve --demo` in an empty home (what the first `make serve`
    does): while initdb and pg_ctl run, the server has no gRPC thread; then it
    serves and its demo worker connects."""
    server = ServerProcess(database_url=None, home=tmp_path / "home", extra_args=["--demo"]).launch()
    assert server.process is not None
    pid = server.process.pid
    seen: list[tuple[str, list[str]]] = []  # (postgres tool, the server's threads meanwhile)
    try:
        deadline = time.monotonic() + 120
        while not server.port_file.exists():
            assert server.process.poll() is None, f"server exited:\n{server.log()[-4000:]}"
            assert time.monotonic() < deadline, f"server not ready:\n{server.log()[-4000:]}"
            # Threads read before the children: a tool seen running was running when these
            # threads already existed (reading them after raced with a server moving on).
            threads = _thread_names(pid)
            tools = [name for name in _children(pid) if name in POSTGRES_TOOLS]
            if tools:
                seen.append((tools[0], threads))
            time.sleep(0.01)
        server.wait_ready()

        assert "initdb" in {tool for tool, _ in seen}, "initdb was never seen running (it takes seconds)"
        for tool, threads in seen:
            grpc_threads = [t for t in threads if t.startswith(GRPC_THREAD_PREFIXES)]
            assert not grpc_threads, f"{tool} ran while gRPC threads existed: {grpc_threads}"
        with server.channel() as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
        deadline = time.monotonic() + 60
        while "connected as" not in server.log():
            assert time.monotonic() < deadline, f"the demo worker did not connect:\n{server.log()[-4000:]}"
            time.sleep(0.1)
    finally:
        assert server.stop() == 0


@pytest.fixture(scope="module")
def first_server(database_factory, tmp_path_factory):
    server = ServerProcess(database_url=database_factory.create(), home=tmp_path_factory.mktemp("first")).start()
    yield server
    server.stop()


def _second_server(home: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
    env.update({"GEOPERA_HOME": str(home), "GEOPERA_DATABASE_URL": database_url})
    # Before the fix the gRPC case shared the port and kept running: the timeout fails it.
    return subprocess.run(
        [sys.executable, "-m", "geopera_kernel.server.cli", "serve", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("port_kind", ["gRPC", "HTTP"])
def test_a_second_server_on_a_taken_port_fails_with_one_clear_line(first_server, tmp_path, port_kind):
    if port_kind == "gRPC":
        taken = first_server.address
        args = ["--listen", taken, "--http-listen", "off"]
    else:
        taken = f"127.0.0.1:{first_server.http_port}"
        args = ["--listen", "127.0.0.1:0", "--http-listen", taken]

    second = _second_server(tmp_path / "second", first_server.database_url or "", *args)

    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert lines == [f"error: cannot listen on {taken} ({port_kind}): Address already in use"], second.stderr
    assert "GEOPERA_READY" not in second.stdout
    # The first server still owns its ports and serves.
    with grpc.insecure_channel(first_server.address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_beyond_loopback_needs_tls_or_insecure(tmp_path, database_url):
    refused = _second_server(tmp_path, database_url, "--listen", "0.0.0.0:0", "--http-listen", "off")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        "error: refusing to serve plaintext on 0.0.0.0:0, beyond this machine: "
        "give --tls-cert/--tls-key, or --insecure (GEOPERA_INSECURE=1) to allow it"
    ]
    allowed = ServerProcess(
        database_url=database_url, home=tmp_path / "allowed", extra_args=["--listen", "0.0.0.0:0", "--insecure"]
    ).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{allowed.port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        allowed.stop()
