"""Retries, idempotency keys, resumed watches and progress output, with real
failures: a server still starting, a connection reset after the server did the
work, a server replica killed under an open watch, a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psycopg
import pytest
from geopera_sdk import Client, NotFound, RetryPolicy, Unavailable

from geopera.v1 import resources_pb2
from geopera_kernel.server.store.database import _MIGRATION_LOCK_ID
from tests.conftest import SAMPLES
from tests.jobs_support import FAST_LEASES
from tests.sdk.conftest import FAST_RETRIES
from tests.sdk.proxy import Fault, FaultyProxy
from tests.support.server import REPO, ServerProcess
from tests.support.terminal import bar_percents, run_on_terminal

SUCCEEDED = resources_pb2.JOB_STATUS_SUCCEEDED


def _access_log(server: ServerProcess) -> list[dict]:
    """The server's access log lines (one per call)."""
    entries = []
    for line in server.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("logger") == "geopera.access":
            entries.append(record)
    return entries


def _count(server: ServerProcess, rpc: str) -> int:
    return sum(1 for e in _access_log(server) if e.get("rpc") == rpc)


def _noop_jobs(client: Client) -> int:
    return len(list(client.jobs.list("alpha", job_type_id="test_noop")))


def test_the_automatic_idempotency_key_is_reused_by_the_retry(world, client):
    """The first attempt reaches the server and creates the job, then the
    connection is reset before the answer arrives (UNAVAILABLE): the SDK's
    retry carries the same key, so the server replays the first job."""
    before = _noop_jobs(client)
    reserves = len(list(client.credits.ledger("alpha")))
    with FaultyProxy(world.server.port) as proxy:
        proxy.break_next_connection(Fault(after_request_containing=b"processing.create"))
        with Client(proxy.address, world.tokens["alpha"], retries=FAST_RETRIES) as flaky:
            job = flaky.jobs.create("alpha", "test_noop", {"note": "reset after the server answered"})
        assert proxy.resets == 1 and proxy.connections >= 2
    assert _noop_jobs(client) == before + 1  # one job, not two
    assert client.jobs.get(job.id).status == resources_pb2.JOB_STATUS_PENDING
    assert len(list(client.credits.ledger("alpha"))) == reserves + 1  # one reservation
    client.jobs.cancel(job.id)

    # Without retries the same reset surfaces as a typed UNAVAILABLE, and that
    # attempt's work (done by the server) stays done exactly once.
    with FaultyProxy(world.server.port) as proxy:
        proxy.break_next_connection(Fault(after_request_containing=b"processing.create"))
        with Client(proxy.address, world.tokens["alpha"], retries=0) as fragile, pytest.raises(Unavailable):
            fragile.jobs.create("alpha", "test_noop", {"note": "no retry"}, idempotency_key="sdk-no-retry-key")
        # The replay may meet the reset connection still in gRPC's shared subchannel: it may
        # retry (same key, so safe), and must still get the first attempt's job.
        with Client(proxy.address, world.tokens["alpha"], retries=FAST_RETRIES) as caller:
            replay = caller.jobs.create("alpha", "test_noop", {"note": "no retry"}, idempotency_key="sdk-no-retry-key")
    assert _noop_jobs(client) == before + 2
    client.jobs.cancel(replay.id)


def test_a_write_that_may_have_run_is_not_retried(world, client):
    """items.create has no idempotency key: after a reset that hides whether it
    ran, the SDK raises UNAVAILABLE instead of registering the item twice."""
    upload_id = client.upload("alpha", (SAMPLES / "s2l1c_slovenia_20150909_bgrn.tif").read_bytes())
    with FaultyProxy(world.server.port) as proxy:
        proxy.break_next_connection(Fault(after_request_containing=b"items.create"))
        with Client(proxy.address, world.tokens["alpha"], retries=FAST_RETRIES) as flaky, pytest.raises(Unavailable):
            flaky.items.create("alpha", "sdk_maybe_created", [{"key": "data", "upload_id": upload_id}])
        assert proxy.connections == 1  # no second attempt
    # It did run, once: the caller decides what to do about it.
    assert [i.name for i in client.items.list("alpha", collection_id="default")].count("sdk_maybe_created") == 1


def test_a_server_that_is_still_starting_is_retried(world):
    """NOT_READY (UNAVAILABLE) while the server waits for its database: the call
    is retried with backoff until the server serves it."""
    replica = ServerProcess(database_url=world.database_url, home=world.home, extra_env=FAST_LEASES)
    replica.log_path = world.home / "starting.log"
    replica.port_file = world.home / "starting.port"
    with psycopg.connect(world.database_url, autocommit=True) as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_ID,))
        replica.launch()
        try:
            port = replica.wait_listening()
            release = threading.Timer(1.0, blocker.execute, ("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_ID,)))
            release.start()
            patient = RetryPolicy(max_attempts=30, initial_backoff=0.1, max_backoff=0.3, total_timeout=30)
            started = time.monotonic()
            with Client(f"127.0.0.1:{port}", world.tokens["alpha"], retries=patient) as early:
                job = early.jobs.create("alpha", "test_noop", {"note": "early bird"})
                assert early.projects.get("alpha").id == "alpha"
            assert time.monotonic() - started >= 0.9
            release.join()
            calls = [(e["operation"], e["code"]) for e in _access_log(replica) if e["rpc"] == "Execute"]
            # Refused while starting (at least once), then served exactly once.
            assert calls.count(("processing.create", "UNAVAILABLE")) >= 1, calls
            assert calls.count(("processing.create", "OK")) == 1, calls
            with Client(world.server.address, world.tokens["alpha"]) as check:
                assert check.jobs.get(job.id).status == resources_pb2.JOB_STATUS_PENDING
                check.jobs.cancel(job.id)
        finally:
            replica.stop()


def test_a_watch_resumes_on_another_replica_after_its_server_is_killed(world, client):
    """The watch runs on replica A (first address of the target); A is
    SIGKILLed mid-job; the SDK resumes with after_sequence on B (the worker's
    server) and delivers every event exactly once, through the terminal one."""
    replica_a = ServerProcess(database_url=world.database_url, home=world.home, extra_env=FAST_LEASES)
    replica_a.log_path = world.home / "replica-a.log"
    replica_a.port_file = world.home / "replica-a.port"
    replica_a.start()
    try:
        target = f"ipv4:127.0.0.1:{replica_a.port},127.0.0.1:{world.server.port}"
        job = client.jobs.create_and_dispatch(
            "alpha", "test_cog", {"name": "sdk_watched", "steps": 12, "step_seconds": 0.25}
        )
        watches_on_b = _count(world.server, "WatchJob")
        with Client(target, world.tokens["alpha"], retries=FAST_RETRIES) as watcher:
            watch = watcher.jobs.watch(job.id, timeout=60)
            events = []
            for event in watch:
                events.append(event)
                if event.event_type == "progress" and replica_a.process.poll() is None:
                    replica_a.process.send_signal(signal.SIGKILL)
                    replica_a.process.wait()
        assert replica_a.process.returncode == -signal.SIGKILL
        assert watch.resumes >= 1
        sequences = [e.sequence for e in events]
        assert sequences == list(range(sequences[0], sequences[-1] + 1))  # none lost, none twice
        assert events[0].event_type == "snapshot" and events[-1].job.status == SUCCEEDED
        assert events[-1].job.id == job.id and [e for e in events if e.event_type == "progress"]
        # The rest of the watch was served by B (its access line follows the stream's end).
        deadline = time.monotonic() + 10
        while _count(world.server, "WatchJob") == watches_on_b:
            assert time.monotonic() < deadline, "B never served the resumed watch"
            time.sleep(0.05)
    finally:
        replica_a.stop()


WAITER = textwrap.dedent(
    """
    import os, sys
    from geopera_sdk import Client

    with Client(os.environ["T_TARGET"], os.environ["T_TOKEN"]) as client:
        job = client.jobs.create_and_dispatch("alpha", "test_cog", {"name": os.environ["T_NAME"], "steps": 4,
                                              "step_seconds": 0.15})
        job.wait(timeout=60, progress=True)
        print("final", job.status_name, flush=True)
    """
)


# Run first, it makes tqdm (an optional dependency) unimportable: the built-in bar draws.
WITHOUT_TQDM = "import sys; sys.modules['tqdm'] = None\n"


def _waiter(world, name: str, prelude: str = "") -> tuple[dict[str, str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
    env.update(T_TARGET=world.server.address, T_TOKEN=world.tokens["alpha"], T_NAME=name, TERM="xterm")
    return env, [sys.executable, "-c", prelude + WAITER]


@pytest.mark.parametrize("bar", ["tqdm", "built-in"])
def test_wait_draws_a_progress_bar_on_a_terminal(world, bar):
    """On a terminal (here a fresh pty, which reports a 0x0 size) the bar is drawn
    in place, with tqdm when it is installed and with the built-in bar otherwise."""
    env, argv = _waiter(world, f"sdk_tty_{bar.replace('-', '_')}", "" if bar == "tqdm" else WITHOUT_TQDM)
    status, stdout, text = run_on_terminal(argv, env, REPO)
    assert status == 0, text
    assert stdout.strip() == "final SUCCEEDED"
    assert "\r" in text and "job_" in text  # redrawn in place, labelled with the job id
    percents = bar_percents(text)
    assert percents and percents[-1] == 100 and percents == sorted(percents)
    assert re.search(r"SUCCEEDED 0:00:\d\d", text)  # the status and the time waited


def test_wait_is_silent_when_stderr_is_not_a_terminal(world):
    env, argv = _waiter(world, "sdk_pipe")
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == "final SUCCEEDED"
    assert done.stderr == b""


def test_other_errors_are_not_retried(world):
    """NOT_FOUND is final: exactly one attempt reaches the server."""

    def not_found_gets() -> int:
        entries = _access_log(world.server)
        return sum(1 for e in entries if (e.get("operation"), e.get("code")) == ("items.get", "NOT_FOUND"))

    before = not_found_gets()
    with Client(world.server.address, world.tokens["alpha"], retries=FAST_RETRIES) as sdk, pytest.raises(NotFound):
        sdk.items.get("it_missing")
    # The access line is written as the call ends, possibly after the client saw the error.
    deadline = time.monotonic() + 5
    while not_found_gets() == before and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # time enough for a retry (backoffs are at most 0.5 s) to show up
    assert not_found_gets() == before + 1
