"""The access log line says what a call cost below the transport: the database time
and the caches it hit or missed (`server/callstats.py`): token, item (in memory) and
item render (an item's encoding stored in the database).
`bench/items_get.py` reads its cache hit rates and database time per call from them."""

from __future__ import annotations

import json
import time

from geopera.v1 import catalog_pb2


def _access_line(world, request_id: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for raw in world.server.log().splitlines():
            if f'"request_id":"{request_id}"' in raw:
                return json.loads(raw)
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {request_id}")


def test_items_get_logs_cache_misses_then_hits_and_the_database_time(world):
    token = world.make_token(scopes=["catalog:read"], projects=["alpha"])  # not in the token cache yet
    client = world.client(token)
    item_id = world.items[sorted(world.items)[0]]

    first = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=item_id), x_request_id="stats-first")
    second = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=item_id), x_request_id="stats-second")
    assert first.item.id == second.item.id == item_id

    cold = _access_line(world, "stats-first")
    # The item's first read ever: no stored render yet, so it is built and stored.
    assert cold["cache_misses"] == {"token": 1, "item": 1, "item_render": 1}
    assert "cache_hits" not in cold
    assert cold["db_uses"] == 2  # the token lookup; the render lookup, item query and render write
    assert 0 < cold["db_ms"] <= cold["duration_ms"]

    warm = _access_line(world, "stats-second")
    assert warm["cache_hits"] == {"token": 1, "item": 1}
    assert "cache_misses" not in warm
    assert "db_ms" not in warm and "db_uses" not in warm


def test_an_uncached_read_logs_its_database_time(world):
    client = world.client("alpha")
    client.execute("projects.get", catalog_pb2.ProjectsGetParams(project_id="alpha"), x_request_id="stats-project")
    line = _access_line(world, "stats-project")
    assert line["db_uses"] >= 1 and line["db_ms"] > 0
