"""Webhooks against a real server and a real receiver on loopback: Standard
Webhooks signatures checked by the `standardwebhooks` package, retries under
the same webhook-id, auto-disable, delete, and a server killed between the
enqueue and the send."""

from __future__ import annotations

import json
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from geopera.v1 import processing_pb2, webhooks_pb2
from tests.conftest import SAMPLES, TEST_SERVER_ENV, World, start_seeded_world, stop_world
from tests.support.db import DatabaseFactory
from tests.support.metrics import scrape, value
from tests.support.server import ServerProcess
from tests.support.webhook_receiver import Receiver, verified

SOURCE = "s2l1c_slovenia_20150711_bgrn"
AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
# Loopback receivers are allowed here; retries come fast, and 3 failures disable a hook.
WEBHOOK_ENV = {
    **TEST_SERVER_ENV,
    "GEOPERA_WEBHOOKS_ALLOW_PRIVATE": "1",
    "GEOPERA_WEBHOOKS_RETRY_BASE": "0.2",
    "GEOPERA_WEBHOOKS_DISABLE_AFTER": "3",
    "GEOPERA_WEBHOOKS_TIMEOUT": "2",
}


@pytest.fixture(scope="module")
def hooked_world(database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    state = start_seeded_world(database_factory.create(), tmp_path_factory.mktemp("webhooks"), WEBHOOK_ENV)
    try:
        yield state
    finally:
        stop_world(state)


def create_hook(world: World, url: str, *event_types: str) -> webhooks_pb2.WebhooksCreateResult:
    return world.client("alpha").execute(
        "webhooks.create",
        webhooks_pb2.WebhooksCreateParams(project_id="alpha", url=url, event_types=list(event_types)),
    )


def cancelled_job(world: World) -> str:
    """A clip job created and cancelled (no worker runs here): events
    `created`, `dispatched`, then `cancelled`."""
    client = world.client("alpha")
    params = processing_pb2.ClipCreateFromItemParams(
        source_item_id=world.items[SOURCE], project_id="alpha", output_name=f"hooked_{secrets.token_hex(4)}"
    )
    params.aoi_geometry.update(AOI)
    job_id = client.execute("clip.create_from_item", params).job.id
    client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job_id))
    return job_id


def deliveries(world: World, webhook_id: str) -> webhooks_pb2.WebhooksDeliveriesListResult:
    return world.client("alpha").execute(
        "webhooks.deliveries.list", webhooks_pb2.WebhooksDeliveriesListParams(webhook_id=webhook_id)
    )


def test_job_events_arrive_signed_as_standard_webhooks(hooked_world: World) -> None:
    with Receiver() as receiver:
        created = create_hook(hooked_world, receiver.url, "job.created", "job.cancelled")
        assert created.secret.startswith("whsec_") and created.webhook.id.startswith("wh_")
        job_id = cancelled_job(hooked_world)
        first, second = receiver.wait_for(2)
        payloads = [verified(created.secret, message) for message in (first, second)]
        assert [p["type"] for p in payloads] == ["job.created", "job.cancelled"]
        assert all(p["data"]["job"]["id"] == job_id for p in payloads)
        assert payloads[1]["data"]["job"]["status"] == "cancelled"
        assert first.headers["webhook-id"] != second.headers["webhook-id"]
        assert first.headers["webhook-id"].startswith("msg_")
        # The secret is shown once: a listing never carries it.
        listed = hooked_world.client("alpha").execute(
            "webhooks.list", webhooks_pb2.WebhooksListParams(project_id="alpha")
        )
        assert created.webhook.id in [h.id for h in listed.webhooks]
        assert created.secret not in str(listed)
        # A wrong secret fails the independent verifier.
        with pytest.raises(WebhookVerificationError):
            verified("whsec_" + "A" * 43 + "=", first)
        hooked_world.client("alpha").execute(
            "webhooks.delete", webhooks_pb2.WebhooksDeleteParams(webhook_id=created.webhook.id)
        )


def test_a_failed_attempt_is_retried_under_the_same_webhook_id(hooked_world: World) -> None:
    before = scrape(hooked_world.server.http_url)
    with Receiver() as receiver:
        receiver.statuses.extend([500])
        created = create_hook(hooked_world, receiver.url, "job.cancelled")
        cancelled_job(hooked_world)
        first, second = receiver.wait_for(2)
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert verified(created.secret, first) == verified(created.secret, second)
        assert first.body == second.body
        log = _until(lambda: deliveries(hooked_world, created.webhook.id), lambda r: len(r.attempts) == 2)
        newest, oldest = log.attempts
        assert (oldest.attempt, oldest.status_code, newest.attempt, newest.status_code) == (1, 500, 2, 200)
        assert "HTTP 500" in oldest.error and newest.error == ""
        assert newest.message_state == "delivered" and newest.latency_ms > 0
        assert log.webhook.enabled and log.webhook.consecutive_failures == 0
        after = scrape(hooked_world.server.http_url)
        for outcome in ("failed", "delivered"):
            counted = value(after, "geopera_webhook_deliveries_total", outcome=outcome)
            assert counted - value(before, "geopera_webhook_deliveries_total", outcome=outcome) == 1
        hooked_world.client("alpha").execute(
            "webhooks.delete", webhooks_pb2.WebhooksDeleteParams(webhook_id=created.webhook.id)
        )


def test_redirects_slow_receivers_and_big_answers_are_failed_attempts(hooked_world: World) -> None:
    """A redirect is not followed, a receiver slower than the timeout
    fails the attempt (2 s here), and an answer's body is not read beyond 1 KiB."""
    client = hooked_world.client("alpha")
    with Receiver() as elsewhere, Receiver() as receiver:
        receiver.statuses.extend([302])
        receiver.redirect_to = elsewhere.url
        created = create_hook(hooked_world, receiver.url, "job.cancelled")
        client.execute("webhooks.test", webhooks_pb2.WebhooksTestParams(webhook_id=created.webhook.id))
        log = _until(lambda: deliveries(hooked_world, created.webhook.id), lambda r: len(r.attempts) == 2)
        assert log.attempts[1].status_code == 302 and "not followed" in log.attempts[1].error
        assert elsewhere.received == []
        client.execute("webhooks.delete", webhooks_pb2.WebhooksDeleteParams(webhook_id=created.webhook.id))

        receiver.delay_seconds = 5.0
        slow = create_hook(hooked_world, receiver.url, "job.cancelled")
        client.execute("webhooks.test", webhooks_pb2.WebhooksTestParams(webhook_id=slow.webhook.id))
        log = _until(lambda: deliveries(hooked_world, slow.webhook.id), lambda r: len(r.attempts) >= 1)
        assert "timed out after 2 s" in log.attempts[-1].error and log.attempts[-1].latency_ms < 4000
        client.execute("webhooks.delete", webhooks_pb2.WebhooksDeleteParams(webhook_id=slow.webhook.id))

        receiver.delay_seconds, receiver.body_bytes = 0.0, 64 << 20
        receiver.statuses.extend([500])
        big = create_hook(hooked_world, receiver.url, "job.cancelled")
        client.execute("webhooks.test", webhooks_pb2.WebhooksTestParams(webhook_id=big.webhook.id))
        log = _until(lambda: deliveries(hooked_world, big.webhook.id), lambda r: len(r.attempts) >= 1)
        first = log.attempts[-1]
        assert first.status_code == 500 and len(first.error) < 300 and first.latency_ms < 2000
        client.execute("webhooks.delete", webhooks_pb2.WebhooksDeleteParams(webhook_id=big.webhook.id))


def test_a_hook_failing_again_and_again_is_disabled(hooked_world: World) -> None:
    client = hooked_world.client("alpha")
    with Receiver() as receiver:
        receiver.statuses.extend([503] * 50)
        created = create_hook(hooked_world, receiver.url, "job.cancelled")
        client.execute("webhooks.test", webhooks_pb2.WebhooksTestParams(webhook_id=created.webhook.id))
        receiver.wait_for(3)
        log = _until(lambda: deliveries(hooked_world, created.webhook.id), lambda r: not r.webhook.enabled)
        assert "3 consecutive failed attempts" in log.webhook.disabled_reason
        assert len(log.attempts) == 3 and all(a.error for a in log.attempts)
        seen = len(receiver.received)
        cancelled_job(hooked_world)  # nothing is enqueued for a disabled hook, nothing more sent
        time.sleep(2.5)
        assert len(receiver.received) == seen == 3


def test_deleting_a_hook_stops_its_deliveries(hooked_world: World) -> None:
    client = hooked_world.client("alpha")
    with Receiver() as receiver:
        receiver.statuses.extend([500] * 2)
        created = create_hook(hooked_world, receiver.url, "job.cancelled")
        client.execute("webhooks.test", webhooks_pb2.WebhooksTestParams(webhook_id=created.webhook.id))
        receiver.wait_for(1)
        client.execute("webhooks.delete", webhooks_pb2.WebhooksDeleteParams(webhook_id=created.webhook.id))
        seen = len(receiver.received)
        cancelled_job(hooked_world)
        time.sleep(2.5)  # the retry would have come by now, and the job's message
        assert len(receiver.received) == seen


def test_a_message_enqueued_before_a_crash_is_delivered_once_after_the_restart(
    database_url: str, tmp_path: Path
) -> None:
    # The first server sends nothing (GEOPERA_WEBHOOKS_SEND=0): the message
    # waits in the outbox when the server is killed.
    world = start_seeded_world(database_url, tmp_path / "first", {**WEBHOOK_ENV, "GEOPERA_WEBHOOKS_SEND": "0"})
    with Receiver() as receiver:
        try:
            created = create_hook(world, receiver.url, "job.cancelled")
            job_id = cancelled_job(world)
        finally:
            assert world.channel is not None
            world.channel.close()
            world.server.stop(signal.SIGKILL)
        assert receiver.received == []
        restarted = ServerProcess(database_url=database_url, home=tmp_path / "second", extra_env=WEBHOOK_ENV).start()
        try:
            (message,) = receiver.wait_for(1)
            assert verified(created.secret, message)["data"]["job"]["id"] == job_id
            time.sleep(2.5)
            assert len(receiver.received) == 1
        finally:
            restarted.stop()


def _until(
    read: Callable[[], webhooks_pb2.WebhooksDeliveriesListResult],
    done: Callable[[webhooks_pb2.WebhooksDeliveriesListResult], bool],
    timeout: float = 20.0,
) -> webhooks_pb2.WebhooksDeliveriesListResult:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            assert done(value), value
            return value
        time.sleep(0.1)
