"""The SDK's batch helpers against the real server and worker: create_batch,
wait_all with one combined progress display, resubmit, watch_many."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap

import pytest
from geopera_sdk import AsyncClient, FailedPrecondition, InvalidArgument

from geopera.v1 import resources_pb2
from tests.support.server import REPO
from tests.support.terminal import bar_percents, run_on_terminal


def test_create_batch_and_wait_all_with_a_combined_progress(client):
    requests = [{"job_type_id": "test_noop", "input_params": {"note": str(i)}} for i in range(8)]
    requests.append({"job_type_id": "test_noop", "input_params": {"bad": 1}})
    batch = client.jobs.create_batch("alpha", requests, dispatch=True)
    assert len(batch.jobs) == 8 and batch.batch_id
    assert [(e.index, e.reason) for e in batch.errors] == [(8, "INVALID_JOB_PARAMS")]
    snapshots: list[resources_pb2.Job] = []
    jobs = client.jobs.wait_all(batch, progress=snapshots.append)
    assert all(job.succeeded for job in jobs)
    assert {s.id for s in snapshots} == {j.id for j in batch.jobs}
    # Already ended: a second wait (the bar on a non-terminal draws nothing) returns at once.
    assert all(job.succeeded for job in client.jobs.wait_all(jobs, progress=True))


def test_all_or_nothing_raises_and_resubmit_runs_a_job_again(client):
    with pytest.raises(InvalidArgument) as info:
        client.jobs.create_batch(
            "alpha", [{"job_type_id": "test_noop", "input_params": {"bad": 1}}], all_or_nothing=True
        )
    assert info.value.reason == "INVALID_JOB_PARAMS"
    job = client.jobs.create_and_dispatch("alpha", "test_fail", {"message": "first"}).wait(raise_on_failure=False)
    assert job.status_name == "FAILED"
    again = client.jobs.resubmit(job.id, {"message": "second"})
    assert again.proto.resubmitted_from == job.id and dict(again.proto.input_params) == {"message": "second"}
    assert not again.wait(raise_on_failure=False).succeeded
    with pytest.raises(FailedPrecondition):
        pending = client.jobs.create("alpha", "test_noop", {})
        try:
            client.jobs.resubmit(pending.id)
        finally:
            pending.cancel()


def test_async_wait_all_across_jobs_of_one_project(world):
    async def run() -> list[bool]:
        async with AsyncClient(world.server.address, world.tokens["alpha"]) as sdk:
            jobs = [await sdk.jobs.create_and_dispatch("alpha", "test_noop", {}) for _ in range(3)]
            done = await sdk.jobs.wait_all(jobs)
            return [job.succeeded for job in done]

    assert asyncio.run(run()) == [True, True, True]


BATCH_WAITER = textwrap.dedent(
    """
    import os
    from geopera_sdk import Client

    with Client(os.environ["T_TARGET"], os.environ["T_TOKEN"]) as client:
        requests = [{"job_type_id": "test_cog", "input_params": {"name": f"{os.environ['T_NAME']}_{i}", "steps": 3,
                                                                 "step_seconds": 0.1}} for i in range(6)]
        batch = client.jobs.create_batch("alpha", requests, dispatch=True)
        jobs = client.jobs.wait_all(batch, timeout=120, progress=True)
        print("final", sorted({job.status_name for job in jobs}), flush=True)
    """
)


def test_wait_all_draws_one_combined_bar_on_a_terminal(world):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPERA_")}
    env.update(T_TARGET=world.server.address, T_TOKEN=world.tokens["alpha"], T_NAME="sdk_batch_tty", TERM="xterm")
    # The built-in bar (tqdm made unimportable), whose text is the same on every version.
    argv = [sys.executable, "-c", "import sys; sys.modules['tqdm'] = None\n" + BATCH_WAITER]
    status, stdout, text = run_on_terminal(argv, env, REPO)
    assert status == 0, text
    assert stdout.strip() == "final ['SUCCEEDED']"
    assert "\r" in text and "6 jobs" in text and "6/6 ended" in text  # one bar for the batch, redrawn in place
    percents = bar_percents(text)
    assert percents and percents[-1] == 100 and percents == sorted(percents)
