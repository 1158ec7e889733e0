"""The SDK's `webhooks` namespace (sync and asyncio) against the real server,
a real worker and a real receiver on loopback: a job that succeeds is POSTed,
signed, and the delivery log shows it."""

from __future__ import annotations

import asyncio
import time

from geopera_sdk import AsyncClient, Client, NotFound

from tests.conftest import World
from tests.sdk.conftest import FAST_RETRIES
from tests.support.webhook_receiver import Receiver, verified


def test_a_succeeded_job_reaches_the_hook_through_the_sdk(client: Client) -> None:
    with Receiver() as receiver:
        created = client.webhooks.create("alpha", receiver.url, ["job.succeeded"])
        hook = created.webhook
        assert hook.id in [h.id for h in client.webhooks.list("alpha")]
        job = client.jobs.create_and_dispatch("alpha", "test_cog", {"name": "sdk_webhook"})
        assert job.wait(timeout=60).succeeded
        (message,) = receiver.wait_for(1)
        payload = verified(created.secret, message)
        assert payload["type"] == "job.succeeded" and payload["data"]["job"]["id"] == job.id
        deadline = time.monotonic() + 10
        while not (attempts := list(client.webhooks.deliveries(hook.id))) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [(a.message_id, a.status_code, a.message_state) for a in attempts] == [
            (message.headers["webhook-id"], 200, "delivered")
        ]
        assert client.webhooks.delete(hook.id).id == hook.id
        try:
            client.webhooks.test(hook.id)
            raise AssertionError("a deleted hook took a test message")
        except NotFound as err:
            assert err.reason == "WEBHOOK_NOT_FOUND"


def test_the_asyncio_client_sends_a_test_message(world: World) -> None:
    async def run() -> None:
        async with AsyncClient(world.server.address, world.tokens["alpha"], retries=FAST_RETRIES) as aclient:
            with Receiver() as receiver:
                created = await aclient.webhooks.create("alpha", receiver.url)
                message_id = await aclient.webhooks.test(created.webhook.id)
                (message,) = await asyncio.to_thread(receiver.wait_for, 1)
                assert message.headers["webhook-id"] == message_id
                assert verified(created.secret, message)["type"] == "webhook.test"
                assert [h.id async for h in aclient.webhooks.list("alpha")][-1] == created.webhook.id
                await aclient.webhooks.delete(created.webhook.id)

    asyncio.run(run())
