"""Credits under concurrency: the balance never goes negative and the ledger
always adds up."""

from __future__ import annotations

import asyncio
import concurrent.futures

import grpc
import pytest

from geopera.v1 import processing_pb2
from geopera_kernel.raster.cost import CostModel
from geopera_kernel.server.domain.jobs import JobTypeRecord
from tests.conftest import World, _services
from tests.jobs_support import balance, ledger, ledger_sums, struct
from tests.support.client import RpcFailure
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def poor_world(database_factory, tmp_path_factory):
    home = tmp_path_factory.mktemp("credits")
    url = database_factory.create()
    server = ServerProcess(database_url=url, home=home).start()
    world = World(server=server, database_url=url, home=home)

    async def seed() -> None:
        services = await _services(url, home)
        try:
            await services.catalog.create_project("poor", "Poor")
            await services.credits.grant("poor", 100, "exactly one hundred")
            _, world.tokens["poor"] = await services.tokens.create_token(
                name="poor",
                kind="user",
                scopes=["processing:process", "processing:read", "credits:read"],
                project_ids=["poor"],
            )
            await services.jobs.upsert_job_type(
                JobTypeRecord("one_credit", "costs exactly one credit", {"type": "object"}, CostModel(1, 0, 0, 1))
            )
        finally:
            await services.db.close()

    asyncio.run(seed())
    world.channel = server.channel()
    yield world
    world.channel.close()
    server.stop()


def test_200_concurrent_spends_of_one_against_a_balance_of_100(poor_world):
    client = poor_world.client("poor")
    params = processing_pb2.ProcessingCreateParams(project_id="poor", job_type_id="one_credit", input_params=struct({}))

    def spend():
        try:
            return client.execute("processing.create", params).job.id
        except RpcFailure as failure:
            return failure

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        outcomes = list(pool.map(lambda _: spend(), range(200)))
    created = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if not isinstance(o, str)]
    assert len(created) == 100 and len(set(created)) == 100
    assert all((f.code, f.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS") for f in refused)
    assert refused[0].metadata["available"] == "0"

    current = balance(client, "poor")
    assert (current.available, current.held) == (0, 100)
    entries = ledger(client, "poor")
    sums = ledger_sums(entries)
    assert sums == {"grant": 100, "reserve": 100, "capture": 0, "release": 0, "waive": 0}
    assert all(e.available_after >= 0 and e.held_after >= 0 for e in entries)
    # Refused spends left no job behind.
    jobs = client.execute(
        "processing.jobs.list", processing_pb2.ProcessingJobsListParams(project_id="poor", page_size=1000)
    ).jobs
    assert sorted(j.id for j in jobs) == sorted(created)

    # Cancelling releases exactly what was held, and the ledger still adds up.
    for job_id in created[:10]:
        client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job_id))
    current = balance(client, "poor")
    assert (current.available, current.held) == (10, 90)
    sums = ledger_sums(ledger(client, "poor"))
    assert current.available == sums["grant"] - sums["reserve"] + sums["release"]
    assert current.held == sums["reserve"] - sums["capture"] - sums["release"]
