"""README.md's "Job logs" examples, run as printed against `geopera serve --demo` (what
`make serve` runs) and its local worker: the CLI follows a bathymetry job's log to its
end, the event stream carries the record, and the SDK's `wait()` raises
`JobFailedError` with the reason and the last error records of a job that fails."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from geopera.v1 import processing_pb2
from tests.support.client import KernelClient
from tests.support.server import REPO, ServerProcess
from tests.test_readme_grpcurl import _run

SECTION = re.compile(r"^### Job logs\n(.*?)(?=^##)", re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[str]:
    sections = SECTION.findall((REPO / "README.md").read_text())
    assert len(sections) == 1, "README.md lost its Job logs section"
    return re.findall(rf"```{language}\n(.*?)```", sections[0], re.DOTALL)


@pytest.fixture(scope="module")
def demo(database_factory, tmp_path_factory):
    home = tmp_path_factory.mktemp("readme_logs")
    server = ServerProcess(database_url=database_factory.create(), home=home, extra_args=["--demo"]).start()
    channel = server.channel()
    try:
        token = Path(home / "demo-token").read_text().strip()
        wait_for_bathymetry(KernelClient(channel, token))
        yield server, token
    finally:
        channel.close()
        server.stop()


def wait_for_bathymetry(client: KernelClient) -> None:
    """Until the demo's local worker has declared `bathymetry` (a reader starts after the banner)."""
    deadline = time.monotonic() + 60
    while True:
        listed = client.execute("processing.job_types.list", processing_pb2.ProcessingJobTypesListParams())
        if any(t.job_type_id == "bathymetry" and t.connected_workers for t in listed.job_types):
            return
        assert time.monotonic() < deadline, "the demo worker never declared bathymetry"
        time.sleep(0.2)


def test_the_cli_and_the_event_stream_show_a_jobs_records(demo):
    server, token = demo
    [block] = _blocks("bash")
    done = _run(block, server, token)
    assert done.returncode == 0, done.stderr
    record = re.search(r"INFO +\[attempt 1\] depth model over (\d+) pixels: (\d+) water", done.stdout)
    assert record and int(record.group(2)) > 0, done.stdout
    assert '"water_pixels":' in done.stdout
    assert re.search(r"job job_\w+ SUCCEEDED", done.stderr), done.stderr
    assert "event: log" in done.stdout and '"message": "depth model over' in done.stdout


def test_the_sdk_raises_the_reason_and_the_last_error_records(demo):
    server, token = demo
    [block] = _blocks("python")
    done = _run(block, server, token, interpreter="python")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("EMPTY_OUTPUT job job_") and "no water pixel" in lines[0], done.stdout
    depth = r"1 depth model over \d+ pixels: 0 water, \d+ land, \d+ nodata or out of range"
    assert any(re.fullmatch(depth, line) for line in lines[1:]), done.stdout
    assert lines[-1].startswith("1 job job_") and "EMPTY_OUTPUT" in lines[-1], done.stdout
