"""The SDK's `validate_only=True` (ExecuteRequest.validate_only): a price
before paying, and the pixels an analytics call would read, moving nothing."""

from __future__ import annotations

import json

from geopera_sdk import AsyncClient

from tests.conftest import SAMPLES

AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
SOURCE = "s2l1c_slovenia_20150711_bgrn"
AFTER = "s2l1c_slovenia_20150909_bgrn"


def test_a_spend_priced_before_paying_is_what_the_real_call_holds(client, world):
    before = client.credits.balance("alpha")
    priced = client.clip(world.items[SOURCE], AOI, output_name="sdk_priced", validate_only=True)
    estimate = priced.estimate
    assert priced.id == "" and estimate is not None and estimate.total_credits >= 1
    assert estimate.balance_after == before.available - estimate.total_credits
    assert client.credits.balance("alpha") == before
    job = client.jobs.create("alpha", "test_noop", {"note": "priced"}, validate_only=True)
    assert job.id == "" and job.estimate is not None and job.estimate.flat == 1
    real = client.jobs.create("alpha", "test_noop", {"note": "priced"})
    assert real.estimate == job.estimate and real.credits_reserved == job.estimate.total_credits
    assert client.jobs.dispatch(real.id, validate_only=True).estimate.already_reserved
    assert client.jobs.get(real.id).status_name == "PENDING"
    real.cancel()


def test_analytics_validate_only_answers_the_pixels_it_would_read(client, world):
    params = {"before_item_id": world.items[SOURCE], "after_item_id": world.items[AFTER], "index_name": "NDVI",
              "change_threshold": 0.05, "geometry": AOI}  # fmt: skip
    planned = client.analytics.execute("change_detection", params, validate_only=True)
    assert planned.pixels_to_read and planned.outputs == [] and planned.result == {}
    ran = client.analytics.execute("change_detection", params)
    assert ran.pixels_to_read is None and ran["pixels_read"] == planned.pixels_to_read


async def test_the_async_client_takes_it_too(world):
    async with AsyncClient(world.server.address, world.tokens["alpha"]) as client:
        job = await client.jobs.create_and_dispatch("alpha", "test_noop", {"note": "a"}, validate_only=True)
        assert job.id == "" and job.status_name == "DISPATCHED" and job.estimate.total_credits == 1
