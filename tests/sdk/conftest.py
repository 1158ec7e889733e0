"""One server with seeded projects (alpha, beta), tokens, the sample items and a
real worker process, shared by the SDK tests; SDK clients against it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from geopera_sdk import Client, RetryPolicy

from tests.conftest import TEST_SERVER_ENV, World
from tests.jobs_support import FAST_LEASES, start_workers, start_world
from tests.support.db import DatabaseFactory
from tests.support.workers import WorkerProcess

# Retries in tests: quick, but enough to ride out a server restart.
FAST_RETRIES = RetryPolicy(max_attempts=8, initial_backoff=0.05, max_backoff=0.5, total_timeout=30)


@pytest.fixture(scope="package")
def sdk_world(
    database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, list[WorkerProcess]]]:
    # Webhooks to a receiver on loopback (tests/sdk/test_sdk_webhooks.py) are allowed.
    env = {**FAST_LEASES, **TEST_SERVER_ENV, "GEOPERA_WEBHOOKS_ALLOW_PRIVATE": "1"}
    world = start_world(database_factory.create(), tmp_path_factory.mktemp("sdk"), env)
    workers = start_workers(world, 1, capacity=4)
    yield world, workers
    for worker in workers:
        worker.stop()
    assert world.channel is not None
    world.channel.close()
    world.server.stop()


@pytest.fixture(scope="package")
def world(sdk_world: tuple[World, list[WorkerProcess]]) -> World:
    return sdk_world[0]


@pytest.fixture(scope="package")
def client(world: World) -> Iterator[Client]:
    with Client(world.server.address, world.tokens["alpha"], retries=FAST_RETRIES) as sdk:
        yield sdk


@pytest.fixture(scope="package")
def admin(world: World) -> Iterator[Client]:
    with Client(world.server.address, world.tokens["admin"], retries=FAST_RETRIES) as sdk:
        yield sdk
