"""Every job README.md shows, run exactly as printed against `geopera serve
--demo` (what `make serve` runs) and its local worker, ends SUCCEEDED on the
demo data: a reader who copies an example gets a result, not a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from geopera.v1 import processing_pb2
from tests.jobs_support import STATUS, wait_terminal
from tests.support.client import KernelClient
from tests.support.server import ServerProcess
from tests.test_readme_grpcurl import _run, readme_grpcurl_blocks, readme_python_blocks

# How README examples start jobs: the spend operations and the SDK's job helpers.
JOB_STARTERS = ("clip.create_from_item", "processing.create", "processing.dispatch", "client.clip(",
                "client.processing.")  # fmt: skip
BUILTIN_JOB_TYPES = {"clip", "bathymetry"}


VALIDATE_ONLY = '"validate_only": true'


def job_examples(*, priced: bool = False) -> list[tuple[str, str]]:
    """(interpreter, script) of every README example that starts a job (`priced`:
    that only prices one, with validate_only)."""
    blocks = [("bash", block) for block in readme_grpcurl_blocks()]
    blocks += [("python", block) for block in readme_python_blocks()]
    return [
        (interpreter, block) for interpreter, block in blocks
        if any(s in block for s in JOB_STARTERS) and (VALIDATE_ONLY in block) == priced
    ]  # fmt: skip


@pytest.fixture(scope="module")
def demo(database_factory, tmp_path_factory):
    home = tmp_path_factory.mktemp("readme_jobs")
    server = ServerProcess(database_url=database_factory.create(), home=home, extra_args=["--demo"]).start()
    channel = server.channel()
    try:
        token = Path(home / "demo-token").read_text().strip()
        yield server, token, KernelClient(channel, token)
    finally:
        channel.close()
        server.stop()


def _job_ids(client: KernelClient) -> set[str]:
    listed = client.execute(
        "processing.jobs.list", processing_pb2.ProcessingJobsListParams(project_id="demo", page_size=100)
    )
    return {job.id for job in listed.jobs}


def test_the_readme_shows_jobs_of_every_shipped_job_type():
    examples = job_examples()
    assert len(examples) >= 3
    assert all(any(job_type in block for _, block in examples) for job_type in BUILTIN_JOB_TYPES)


@pytest.mark.parametrize("index", range(len(job_examples())))
def test_a_readme_job_ends_succeeded_on_the_demo_data(demo, index):
    server, token, client = demo
    interpreter, block = job_examples()[index]
    before = _job_ids(client)

    result = _run(block, server, token, interpreter)

    assert result.returncode == 0, result.stderr
    started = _job_ids(client) - before
    assert len(started) == 1, f"the example started {len(started)} jobs:\n{block}"
    (job_id,) = started
    final = wait_terminal(client, job_id, timeout=180)
    assert final.status == STATUS.JOB_STATUS_SUCCEEDED, (final.job_type_id, final.error)
    assert final.attempt == 1 and final.output_item_ids and final.credits_charged > 0


@pytest.mark.parametrize("index", range(len(job_examples(priced=True))))
def test_a_readme_price_starts_no_job(demo, index):
    server, token, client = demo
    interpreter, block = job_examples(priced=True)[index]
    before = _job_ids(client)
    result = _run(block, server, token, interpreter)
    assert result.returncode == 0, result.stderr
    assert _job_ids(client) == before
