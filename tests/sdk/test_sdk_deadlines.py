"""SDK deadlines: a call that times out client-side fails DEADLINE_EXCEEDED (not
retried) and must leave the server healthy. Own server, since a failure here
would poison the shared one."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from geopera_sdk import Client, DeadlineExceeded, GeoperaError

from tests.conftest import SAMPLES, World
from tests.jobs_support import start_world

AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())


@pytest.fixture
def own_world(database_url, tmp_path) -> Iterator[World]:
    world = start_world(database_url, tmp_path)
    yield world
    assert world.channel is not None
    world.channel.close()
    world.server.stop()


def test_calls_cut_by_their_deadline_do_not_lose_later_writes(own_world):
    world = own_world
    source = world.items["s2l1c_slovenia_20150711_bgrn"]
    with Client(world.server.address, world.tokens["alpha"], retries=0) as client:
        cut = 0
        for _ in range(60):
            try:
                client.execute(
                    "processing.create",
                    {"project_id": "alpha", "job_type_id": "clip",
                     "input_params": {"source_item_id": source, "aoi_geometry": AOI}},
                    timeout=0.004,
                )  # fmt: skip
            except DeadlineExceeded:
                cut += 1  # a fast machine may finish a few calls within 4 ms
        assert cut >= 30, f"only {cut} of 60 calls were cut by their deadline"
        failures = []
        scene = SAMPLES / "s2l1c_slovenia_20150731_bgrn.tif"
        for i in range(8):
            try:
                client.items.register_file("alpha", f"after_deadlines_{i}", scene, datetime="2020-01-01T00:00:00Z")
            except GeoperaError as error:
                failures.append(error.reason)
    with psycopg.connect(world.database_url, autocommit=True) as db:
        stuck = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state <> 'idle'"
            " AND pid <> pg_backend_pid()"
        ).fetchone()
    assert failures == [], failures
    assert stuck == (0,), "server connections left inside open transactions"
