"""The asyncio client: the same surface, against the same real server."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from geopera_sdk import AsyncClient, AsyncJob, FailedPrecondition, NotFound, PermissionDenied

from geopera.v1 import catalog_pb2, resources_pb2
from tests.conftest import SAMPLES
from tests.sdk.conftest import FAST_RETRIES
from tests.sdk.proxy import Fault, FaultyProxy

S2 = "s2l1c_slovenia_20150711_bgrn"
AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())


async def test_every_async_helper(world, tmp_path):
    async with (
        AsyncClient(world.server.address, world.tokens["alpha"], retries=FAST_RETRIES) as client,
        AsyncClient(world.server.address, world.tokens["admin"]) as admin,
    ):
        assert (await client.projects.get("alpha")).id == "alpha"
        assert [p.id async for p in client.projects.list()] == ["alpha"]
        item = await client.items.get(world.items[S2])
        everything = [i.id async for i in client.items.list("alpha")]
        assert [i.id async for i in client.items.list("alpha", page_size=2, max_items=3)] == everything[:3]
        assert (await client.credits.balance("alpha")).project_id == "alpha"
        assert [e.id async for e in client.credits.ledger("alpha", page_size=1, max_items=2)]
        assert "test_cog" in {t.job_type_id for t in await client.job_types.list()}
        assert (await client.job_types.get("test_noop")).job_type_id == "test_noop"
        # Connected means a heartbeat within the (1.5 s) lease: a late one on a loaded machine is waited for.
        for _ in range(100):
            if (await admin.workers.list())[0].connected:
                break
            await asyncio.sleep(0.2)
        assert (await admin.workers.list())[0].connected
        listed = await client.execute("items.list", {"project_id": "alpha", "page_size": 1})
        assert isinstance(listed, catalog_pb2.ItemsListResult) and len(listed.items) == 1

        pending = await client.jobs.create("alpha", "test_noop", {"note": "async"}, idempotency_key="sdk-async-1")
        assert isinstance(pending, AsyncJob) and pending.status_name == "PENDING"
        same = await client.jobs.create("alpha", "test_noop", {"note": "async"}, idempotency_key="sdk-async-1")
        assert same.id == pending.id
        with pytest.raises(FailedPrecondition):
            await client.jobs.create("alpha", "test_noop", {"note": "changed"}, idempotency_key="sdk-async-1")
        dispatched = await pending.dispatch()
        assert dispatched.dispatch_result.accepted
        assert (await pending.wait(timeout=30)).succeeded
        assert (await client.jobs.get(pending.id)).succeeded
        assert (await client.jobs.wait(pending.id, timeout=10)).succeeded

        running = await client.jobs.create_and_dispatch(
            "alpha", "test_cog", {"name": "sdk_async_cancel", "steps": 200, "step_seconds": 0.05}
        )
        assert (await running.cancel("enough")).status_name == "CANCELLED"
        assert (await client.jobs.cancel(running.id)).status_name == "CANCELLED"
        newest = [j.id async for j in client.jobs.list("alpha", max_items=2, page_size=1)]
        assert newest == [running.id, pending.id]
        assert [j.id async for j in client.jobs.list("alpha", status="cancelled", max_items=1)] == [running.id]

        clip = await client.clip(item.id, AOI, output_name="sdk_async_clip")
        events = [e async for e in client.jobs.watch(clip.id, timeout=60)]
        assert events[0].event_type == "snapshot" and events[-1].job.status == resources_pb2.JOB_STATUS_SUCCEEDED
        output = (await clip.refresh()).output_item_ids[0]
        lineage = await client.items.lineage(output)
        assert {clip.id, item.id} <= {n.id for n in lineage.nodes}
        seen = [e.sequence async for e in clip.watch(after_sequence=events[1].sequence)]
        assert seen == [e.sequence for e in events[2:]]

        uploaded = await client.items.register_file(
            "alpha", "sdk_async_upload", SAMPLES / f"{S2}.tif", collection_id="sdk_async"
        )
        upload_id = await client.upload("alpha", (SAMPLES / f"{S2}.tif").read_bytes(), file_name="again.tif")
        again = await client.items.create(
            "alpha", "sdk_async_again", [{"key": "data", "upload_id": upload_id}], collection_id="sdk_async"
        )
        assert again.assets["data"].sha256 == uploaded.assets["data"].sha256
        result = await client.download(uploaded.assets["data"], tmp_path / "a.tif")
        assert result.sha256 == hashlib.sha256((tmp_path / "a.tif").read_bytes()).hexdigest()

        with pytest.raises(NotFound) as info:
            await client.items.get("it_nothing")
        assert info.value.reason == "ITEM_NOT_FOUND" and info.value.request_id
        with pytest.raises(PermissionDenied) as info:
            await client.workers.list()
        assert info.value.reason == "MISSING_SCOPE"


async def test_async_download_resumes_after_a_reset(world, tmp_path):
    stack = "s2l1c_slovenia_ndvi_68dates"
    with FaultyProxy(world.server.port) as proxy:
        proxy.break_next_connection(Fault(after_response_bytes=1_500_000))
        async with AsyncClient(proxy.address, world.tokens["alpha"], retries=FAST_RETRIES) as client:
            asset = (await client.items.get(world.items[stack])).assets["data"]
            result = await client.download(asset, tmp_path / "stack.tif")
    assert result.resumes == 1 and result.sha256 == asset.sha256
    assert (tmp_path / "stack.tif").read_bytes() == (SAMPLES / f"{stack}.tif").read_bytes()
