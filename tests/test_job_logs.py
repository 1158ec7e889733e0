"""Job logs end to end: a real worker process runs a plugin that logs through `logging`;
its records reach the job (order, fields, attempt), within the server's caps, and users
read them with processing.jobs.logs (min_level, paging, project rules), WatchJob
(include_logs), the HTTP event stream (?include_logs=true), the SDK (`wait()` raising
with the last error logs) and `geopera jobs logs`. Job tokens write only for their own
live attempt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import grpc
import pytest
from geopera_sdk import Client, JobFailedError
from google.protobuf import struct_pb2

from geopera.v1 import kernel_pb2, processing_pb2, resources_pb2, worker_pb2
from tests.conftest import TEST_SERVER_ENV
from tests.jobs_support import (
    FAST_LEASES,
    STATUS,
    RawWorker,
    create_and_dispatch,
    job_metadata,
    start_workers,
    start_world,
    wait_terminal,
    watch,
)
from tests.support.client import RpcFailure
from tests.support.server import REPO

LEVEL = resources_pb2.LogLevel
MAX_ENTRIES = 40
MAX_BYTES = 20_000


@pytest.fixture(scope="module")
def logs_world(database_factory, tmp_path_factory):
    env = {
        **FAST_LEASES, **TEST_SERVER_ENV,
        "GEOPERA_JOB_LOG_MAX_ENTRIES": str(MAX_ENTRIES), "GEOPERA_JOB_LOG_MAX_BYTES": str(MAX_BYTES),
    }  # fmt: skip
    world = start_world(database_factory.create(), tmp_path_factory.mktemp("logs"), env)
    workers = []
    try:
        workers = start_workers(world, 1)
        yield world
    finally:
        for worker in workers:
            worker.stop()
        assert world.channel is not None
        world.channel.close()
        world.server.stop()


def _logs(client, job_id: str, **params: Any) -> processing_pb2.ProcessingJobsLogsResult:
    return client.execute("processing.jobs.logs", processing_pb2.ProcessingJobsLogsParams(job_id=job_id, **params))


def _all_logs(client, job_id: str, **params: Any) -> list[resources_pb2.JobLogEntry]:
    entries, token = [], ""
    while True:
        page = _logs(client, job_id, page_token=token, **params)
        entries += page.entries
        token = page.next_page_token
        if not token:
            return entries


def _run(world, params: dict[str, Any]) -> resources_pb2.Job:
    client = world.client("alpha")
    job = create_and_dispatch(client, "test_log", params).job
    return wait_terminal(client, job.id)


def test_a_plugins_logging_records_reach_the_job_in_order_with_fields_and_attempt(logs_world):
    client = logs_world.client("alpha")
    job = _run(logs_world, {"lines": 3})
    assert job.status == STATUS.JOB_STATUS_SUCCEEDED, job.error
    entries = _all_logs(client, job.id)
    plugin = [e for e in entries if e.fields["logger"] == "tests.plugin.log"]
    assert [e.message for e in plugin] == ["line 0", "line 1", "line 2", "attempt 1 almost done"]
    assert [e.level for e in plugin] == [LEVEL.LOG_LEVEL_INFO] * 3 + [LEVEL.LOG_LEVEL_WARNING]
    assert [e.fields["index"] for e in plugin[:3]] == [0, 1, 2]
    assert plugin[0].fields["job"] == job.id and plugin[3].fields["attempt_seen"] == 1
    assert all(e.attempt == 1 and not e.truncated for e in entries)
    assert [e.sequence for e in entries] == list(range(1, len(entries) + 1))
    times = [e.log_time.ToDatetime() for e in entries]
    assert times == sorted(times)
    assert not any("debug detail" in e.message for e in entries)  # the worker logs at INFO


def test_min_level_filters_and_pages_follow_the_sequence(logs_world):
    client = logs_world.client("alpha")
    job = _run(logs_world, {"lines": 7, "fail": True})
    assert job.status == STATUS.JOB_STATUS_FAILED and job.error.message == "nothing to map"
    everything = _all_logs(client, job.id)
    paged = _all_logs(client, job.id, page_size=2)
    assert [e.sequence for e in paged] == [e.sequence for e in everything]
    first = _logs(client, job.id, page_size=2)
    assert len(first.entries) == 2 and first.next_page_token
    errors = _all_logs(client, job.id, min_level=LEVEL.LOG_LEVEL_ERROR)
    assert [e.message for e in errors][:1] == ["the water mask is empty"]
    assert errors[0].fields["tile"] == "33TVM"
    # The runtime's own record of the failure, with the reason users see in job.error.
    assert any("LOG_FAILURE" in e.message and e.fields["reason"] == "LOG_FAILURE" for e in errors)
    assert all(e.level >= LEVEL.LOG_LEVEL_ERROR for e in errors)
    warnings = _all_logs(client, job.id, min_level=LEVEL.LOG_LEVEL_WARNING)
    assert {e.sequence for e in errors} < {e.sequence for e in warnings}
    # A token is bound to its filter.
    with pytest.raises(RpcFailure) as refused:
        _logs(client, job.id, page_size=2, page_token=first.next_page_token, min_level=LEVEL.LOG_LEVEL_ERROR)
    assert refused.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(RpcFailure) as bad_level:
        _logs(client, job.id, min_level=9)
    assert bad_level.value.reason == "INVALID_LOG_LEVEL"


def test_the_count_cap_ends_with_one_truncated_record(logs_world):
    client = logs_world.client("alpha")
    job = _run(logs_world, {"lines": 100})
    assert job.status == STATUS.JOB_STATUS_SUCCEEDED, job.error
    entries = _all_logs(client, job.id)
    assert len(entries) == MAX_ENTRIES
    assert [e.truncated for e in entries] == [False] * (MAX_ENTRIES - 1) + [True]
    last = entries[-1]
    assert last.level == LEVEL.LOG_LEVEL_WARNING and "log cap reached" in last.message
    assert last.fields["max_entries"] == MAX_ENTRIES


def test_the_byte_cap_ends_with_one_truncated_record(logs_world):
    client = logs_world.client("alpha")
    job = _run(logs_world, {"lines": 30, "line_bytes": 3000})
    entries = _all_logs(client, job.id)
    assert len(entries) < 10 and entries[-1].truncated
    assert sum(len(e.message) for e in entries if not e.truncated) <= MAX_BYTES


def test_other_projects_missing_scope_and_no_token_are_refused(logs_world):
    job = _run(logs_world, {"lines": 1})
    with pytest.raises(RpcFailure) as other:
        _logs(logs_world.client("beta"), job.id)
    assert other.value.code == grpc.StatusCode.PERMISSION_DENIED
    no_read = logs_world.make_token(scopes=["catalog:read"], projects=["alpha"])
    with pytest.raises(RpcFailure) as scope:
        _logs(logs_world.client(no_read), job.id)
    assert (scope.value.code, scope.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE")
    with pytest.raises(RpcFailure) as anonymous:
        _logs(logs_world.client(None), job.id)
    assert anonymous.value.code == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(RpcFailure) as missing:
        _logs(logs_world.client("alpha"), "job_doesnotexist")
    assert missing.value.reason == "JOB_NOT_FOUND"


def _write(stub, token: str, job_id: str, *messages: str) -> worker_pb2.WriteJobLogsResponse:
    records = [worker_pb2.JobLogRecord(level=LEVEL.LOG_LEVEL_INFO, message=m) for m in messages]
    return stub.WriteJobLogs(
        worker_pb2.WriteJobLogsRequest(job_id=job_id, records=records), metadata=job_metadata(token), timeout=10
    )


def test_a_job_token_writes_only_its_own_live_attempt(logs_world):
    raw = RawWorker(logs_world.channel, logs_world.tokens["worker"], ["raw_only"], capacity=2)
    try:
        client = logs_world.client("alpha")
        first = create_and_dispatch(client, "raw_only", {}).job
        second = create_and_dispatch(client, "raw_only", {}).job
        assignments = {a.job.id: a for a in (raw.next_assignment(), raw.next_assignment())}
        mine, theirs = assignments[first.id], assignments[second.id]
        assert _write(raw.stub, mine.job_token, first.id, "hello", "again").stored_entries == 2
        # Hostile records are stored, bounded, never a server error.
        nan_fields = struct_pb2.Struct()
        nan_fields.update({"x": float("nan")})
        with pytest.raises(grpc.RpcError) as nul:  # the edge refuses NUL in any text
            _write(raw.stub, theirs.job_token, second.id, "nul\u0000byte")
        assert nul.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        hostile = [
            worker_pb2.JobLogRecord(level=99, message="long" + "y" * 10_000, fields=nan_fields),  # type: ignore[arg-type]
            worker_pb2.JobLogRecord(
                message="big", fields=struct_pb2.Struct(fields={"b": struct_pb2.Value(string_value="z" * 9000)})
            ),
        ]
        stored = raw.stub.WriteJobLogs(
            worker_pb2.WriteJobLogsRequest(job_id=second.id, records=hostile), metadata=job_metadata(theirs.job_token)
        )
        assert stored.stored_entries == 2
        kept = _all_logs(client, second.id)
        assert kept[0].message.startswith("longy") and len(kept[0].message) == 4096
        assert kept[0].level == LEVEL.LOG_LEVEL_INFO and kept[0].fields["fields_dropped"] is True
        assert kept[1].fields["fields_dropped"] is True
        with pytest.raises(grpc.RpcError) as other_job:
            _write(raw.stub, mine.job_token, second.id, "not mine")
        assert other_job.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as user:
            _write(raw.stub, logs_world.tokens["alpha"], first.id, "a user")
        assert user.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A job token is no reader of logs.
        with pytest.raises(RpcFailure) as reader:
            _logs(logs_world.client(mine.job_token), first.id)
        assert reader.value.reason == "JOB_TOKEN_NOT_ALLOWED"
        raw.stub.ReportFailure(
            worker_pb2.ReportFailureRequest(job_id=first.id, reason="DONE", message="done"),
            metadata=job_metadata(mine.job_token),
        )
        with pytest.raises(grpc.RpcError) as over:
            _write(raw.stub, mine.job_token, first.id, "too late")
        assert over.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as too_many:
            _write(raw.stub, theirs.job_token, second.id, *(["x"] * 501))
        assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [e.message for e in _all_logs(client, first.id)] == ["hello", "again"]
        assert [e.attempt for e in _all_logs(client, first.id)] == [1, 1]
    finally:
        raw.die()


def _watch_logs(client, job_id: str, **flags: Any) -> list[kernel_pb2.WatchJobResponse]:
    request = kernel_pb2.WatchJobRequest(job_id=job_id, include_logs=True, **flags)
    return list(client.stub.WatchJob(request, metadata=client.metadata(), timeout=60))


def test_watch_job_sends_log_records_only_when_asked(logs_world):
    client = logs_world.client("alpha")
    job = create_and_dispatch(client, "test_log", {"lines": 3, "step_seconds": 0.2, "fail": True}).job
    live = _watch_logs(client, job.id)
    assert live[-1].event_type == "failed" and live[-1].job.status == STATUS.JOB_STATUS_FAILED
    records = [m for m in live if m.event_type == "log"]
    stored = _all_logs(client, job.id)
    assert [m.log_entry.sequence for m in records] == [e.sequence for e in stored]
    assert all(not m.HasField("job") for m in records)
    # A record repeats the sequence of the latest job event sent before it.
    latest = 0
    for message in live:
        if message.event_type == "log":
            assert message.sequence == latest
        else:
            assert message.sequence > latest
            latest = message.sequence
    plain = watch(client, job.id)
    assert [m.event_type for m in plain] == ["snapshot"]
    # An ended job: the records after after_log_sequence of at least min_log_level, then the snapshot.
    resumed = _watch_logs(client, job.id, after_log_sequence=2, min_log_level=LEVEL.LOG_LEVEL_ERROR)
    assert resumed[-1].event_type == "snapshot" and resumed[-1].job.status == STATUS.JOB_STATUS_FAILED
    assert all(m.sequence == 0 for m in resumed[:-1])  # no job event sent before them
    assert [m.log_entry.sequence for m in resumed[:-1]] == [
        e.sequence for e in stored if e.sequence > 2 and e.level >= LEVEL.LOG_LEVEL_ERROR
    ]
    with pytest.raises(grpc.RpcError) as negative:
        _watch_logs(client, job.id, after_log_sequence=-1)
    assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _sse(world, path: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(f"{world.server.http_url}{path}")
    request.add_header("Authorization", f"Bearer {world.tokens['alpha']}")
    events, current = [], {}
    with urllib.request.urlopen(request, timeout=60) as response:
        for raw_line in response:
            line = raw_line.decode().rstrip("\n")
            if not line:
                if current:
                    events.append(current)
                current = {}
                continue
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return events


def test_the_event_stream_sends_log_records_with_the_query_flag(logs_world):
    client = logs_world.client("alpha")
    job = create_and_dispatch(client, "test_log", {"lines": 2, "step_seconds": 0.2}).job
    events = _sse(logs_world, f"/v1/jobs/{job.id}/events?include_logs=true")
    assert events[-1]["event"] == "succeeded"
    logged = [e["data"]["log_entry"] for e in events if e["event"] == "log"]
    messages = [entry["message"] for entry in logged]
    assert messages[:2] == ["line 0", "line 1"] and "attempt 1 almost done" in messages
    assert logged[0]["level"] == "LOG_LEVEL_INFO" and logged[0]["fields"]["index"] == 0
    only_warnings = _sse(logs_world, f"/v1/jobs/{job.id}/events?include_logs=1&min_log_level=warning")
    assert [e["data"]["log_entry"]["message"] for e in only_warnings if e["event"] == "log"] == [
        "attempt 1 almost done"
    ]
    without = _sse(logs_world, f"/v1/jobs/{job.id}/events")
    assert [e["event"] for e in without] == ["snapshot"]
    request = urllib.request.Request(
        f"{logs_world.server.http_url}/v1/jobs/{job.id}/events?include_logs=1&min_log_level=loud"
    )
    request.add_header("Authorization", f"Bearer {logs_world.tokens['alpha']}")
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(request, timeout=30)
    assert bad.value.code == 400 and json.loads(bad.value.read())["reason"] == "INVALID_LOG_LEVEL"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("include_logs=1&min_log_level=\u00b2", "INVALID_LOG_LEVEL"),  # a digit to str.isdigit, not to int()
        ("include_logs=1&min_log_level=99999999999999999999", "INVALID_LOG_LEVEL"),
        ("include_logs=1&after_log_sequence=99999999999999999999", "INVALID_SEQUENCE"),
        ("include_logs=1&after_log_sequence=" + "9" * 5000, "INVALID_SEQUENCE"),
        ("after_sequence=99999999999999999999", "INVALID_SEQUENCE"),
        ("after_sequence=-99999999999999999999", "INVALID_SEQUENCE"),
        ("after_sequence=\u00b2", "INVALID_SEQUENCE"),
    ],
)
def test_bad_event_stream_positions_are_400_with_the_reason(logs_world, query, reason):
    job = create_and_dispatch(logs_world.client("alpha"), "test_log", {"lines": 1}).job
    request = urllib.request.Request(
        f"{logs_world.server.http_url}/v1/jobs/{job.id}/events?" + urllib.parse.quote(query, safe="=&")
    )
    request.add_header("Authorization", f"Bearer {logs_world.tokens['alpha']}")
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(request, timeout=30)
    assert (bad.value.code, json.loads(bad.value.read())["reason"]) == (400, reason)


def test_sdk_wait_raises_with_the_reason_and_the_last_error_logs(logs_world):
    with Client(logs_world.server.address, logs_world.tokens["alpha"]) as sdk:
        job = sdk.jobs.create_and_dispatch("alpha", "test_log", {"lines": 2, "fail": True})
        with pytest.raises(JobFailedError) as failed:
            job.wait(timeout=60, progress=True)
        error = failed.value
        assert (error.job_id, error.reason, error.message) == (job.id, "LOG_FAILURE", "nothing to map")
        assert error.job.status == STATUS.JOB_STATUS_FAILED
        assert error.logs[0].message == "the water mask is empty" and error.logs[0].fields["tile"] == "33TVM"
        assert all(e.level >= LEVEL.LOG_LEVEL_ERROR for e in error.logs)
        assert "the water mask is empty" in str(error) and "LOG_FAILURE" in str(error)
        assert [e.message for e in job.logs(min_level="error")] == [e.message for e in error.logs]
        assert sdk.jobs.wait(job.id, raise_on_failure=False).status_name == "FAILED"
        assert [e.sequence for e in sdk.jobs.logs(job.id, page_size=1)] == [
            e.sequence for e in _all_logs(logs_world.client("alpha"), job.id)
        ]
        with pytest.raises(ValueError):
            list(sdk.jobs.logs(job.id, min_level="loud"))
        ok = sdk.jobs.create_and_dispatch("alpha", "test_log", {"lines": 1})
        assert ok.wait(timeout=60).succeeded
        watched = list(sdk.jobs.watch(ok.id, include_logs=True, min_log_level="warning"))
        assert [e.log_entry.message for e in watched if e.event_type == "log"] == ["attempt 1 almost done"]


def _cli(world, *args: str, token: str | None = "alpha") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
    if token is not None:
        env["GEOPERA_TOKEN"] = world.tokens.get(token, token)
    return subprocess.run(
        [sys.executable, "-m", "geopera_kernel.server.cli", "jobs", "logs", *args, "--server", world.server.address],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_prints_and_follows_a_jobs_logs(logs_world):
    client = logs_world.client("alpha")
    job = create_and_dispatch(client, "test_log", {"lines": 3, "step_seconds": 0.3, "fail": True}).job
    followed = _cli(logs_world, job.id, "--follow")
    assert followed.returncode == 1, followed.stderr  # the job FAILED
    lines = followed.stdout.splitlines()
    assert [line.split("] ", 1)[1].split(" {")[0] for line in lines[:3]] == ["line 0", "line 1", "line 2"]
    assert "INFO" in lines[0] and "[attempt 1]" in lines[0] and '{"index":0,' in lines[0]
    assert len(lines) == len(_all_logs(client, job.id))
    assert f"job {job.id} FAILED: nothing to map" in followed.stderr
    errors = _cli(logs_world, job.id, "--min-level", "error", "--json")
    assert errors.returncode == 0, errors.stderr
    records = [json.loads(line) for line in errors.stdout.splitlines()]
    assert records[0]["message"] == "the water mask is empty" and records[0]["level"] == "LOG_LEVEL_ERROR"
    other = _cli(logs_world, job.id, token="beta")
    assert other.returncode == 1 and "PERMISSION_DENIED" in other.stderr and other.stdout == ""
    bad = _cli(logs_world, job.id, "--min-level", "loud")
    assert bad.returncode == 2
