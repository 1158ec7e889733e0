"""Webhooks on a server that does not allow private destinations (the
default): SSRF refusals when a hook is created and when it is delivered,
input checks, validate_only, and who may touch whose hooks."""

from __future__ import annotations

import time

import grpc
import pytest

from geopera.v1 import webhooks_pb2
from geopera_kernel.server.services import Services
from tests.conftest import World
from tests.support.client import RpcFailure
from tests.support.webhook_receiver import Receiver


def _create(
    world: World, url: str, event_types: tuple[str, ...] = ("job.succeeded",), *, validate_only: bool = False
) -> webhooks_pb2.WebhooksCreateResult:
    params = webhooks_pb2.WebhooksCreateParams(project_id="alpha", url=url, event_types=list(event_types))
    result = world.client("alpha").execute("webhooks.create", params, validate_only=validate_only)
    assert isinstance(result, webhooks_pb2.WebhooksCreateResult)
    return result


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://127.1:9/hook",
        "http://2130706433/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.0.1/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/hook",
        "http://[fe80::1]/hook",
    ],
)
def test_private_loopback_and_link_local_urls_are_refused(world: World, url: str) -> None:
    with pytest.raises(RpcFailure) as failure:
        _create(world, url)
    assert failure.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.reason == "WEBHOOK_URL_NOT_ALLOWED", failure.value
    assert failure.value.violations and failure.value.violations[0][0] == "url"


@pytest.mark.parametrize(
    ("url", "event_types", "reason"),
    [
        ("", ["job.succeeded"], "URL_REQUIRED"),
        ("ftp://example.com/x", ["job.succeeded"], "INVALID_WEBHOOK_URL"),
        ("http://user:pw@example.com/x", ["job.succeeded"], "INVALID_WEBHOOK_URL"),
        ("http://example.com:99999/x", ["job.succeeded"], "INVALID_WEBHOOK_URL"),
        ("http:///nohost", ["job.succeeded"], "INVALID_WEBHOOK_URL"),
        ("http://example.com/" + "a" * 3000, ["job.succeeded"], "INVALID_WEBHOOK_URL"),
        ("http://example.com/x", [], "EVENT_TYPES_REQUIRED"),
        ("http://example.com/x", ["job.exploded"], "UNKNOWN_EVENT_TYPE"),
    ],
)
def test_bad_hooks_are_refused_with_a_reason(world: World, url: str, event_types: list[str], reason: str) -> None:
    with pytest.raises(RpcFailure) as failure:
        _create(world, url, tuple(event_types))
    assert (failure.value.code, failure.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


def test_delivery_time_check_refuses_a_hook_that_points_to_loopback(world: World) -> None:
    """A hook whose address is loopback by the time it is sent (here: written
    straight into the table, as DNS rebinding would make a public name) is
    refused at the attempt, and the refusal is in its delivery log."""
    with Receiver() as receiver:

        async def plant(services: Services) -> None:
            async with services.db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO webhooks (id, project_id, url, event_types, secret) "
                    "VALUES ('wh_planted', 'alpha', %(url)s, '{job.succeeded}', 'whsec_AAAA')",
                    {"url": receiver.url},
                )

        world.with_services(plant)
        client = world.client("alpha")
        client.execute("webhooks.test", webhooks_pb2.WebhooksTestParams(webhook_id="wh_planted"))
        deadline = time.monotonic() + 15
        while True:
            log = client.execute(
                "webhooks.deliveries.list", webhooks_pb2.WebhooksDeliveriesListParams(webhook_id="wh_planted")
            )
            if log.attempts or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert log.attempts and "loopback" in log.attempts[0].error, log
        assert log.attempts[0].status_code == 0
        assert receiver.received == []
        client.execute("webhooks.delete", webhooks_pb2.WebhooksDeleteParams(webhook_id="wh_planted"))


def test_validate_only_checks_and_creates_nothing(world: World) -> None:
    client = world.client("alpha")
    before = client.execute("webhooks.list", webhooks_pb2.WebhooksListParams(project_id="alpha"))
    result = _create(world, "http://93.184.215.14/hook", validate_only=True)
    assert result.webhook.id == "" and result.secret == ""
    with pytest.raises(RpcFailure) as failure:
        _create(world, "http://127.0.0.1/hook", validate_only=True)
    assert failure.value.reason == "WEBHOOK_URL_NOT_ALLOWED"
    after = client.execute("webhooks.list", webhooks_pb2.WebhooksListParams(project_id="alpha"))
    assert list(after.webhooks) == list(before.webhooks)


def test_who_may_touch_which_hooks(world: World) -> None:
    hook = _create(world, "http://93.184.215.14/hook").webhook
    read_only = world.make_token(scopes=["processing:read"], projects=["alpha"])
    by_id = {
        "webhooks.delete": webhooks_pb2.WebhooksDeleteParams(webhook_id=hook.id),
        "webhooks.test": webhooks_pb2.WebhooksTestParams(webhook_id=hook.id),
        "webhooks.deliveries.list": webhooks_pb2.WebhooksDeliveriesListParams(webhook_id=hook.id),
    }
    by_project = {
        "webhooks.list": webhooks_pb2.WebhooksListParams(project_id="alpha"),
        "webhooks.create": webhooks_pb2.WebhooksCreateParams(
            project_id="alpha", url="http://93.184.215.14/x", event_types=["job.failed"]
        ),
    }
    for operation, params in {**by_id, **by_project}.items():
        for token, code, reason in [
            (None, grpc.StatusCode.UNAUTHENTICATED, None),
            (read_only, grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE"),
            ("beta", grpc.StatusCode.PERMISSION_DENIED, "PROJECT_ACCESS_DENIED"),
            ("gpk_forged" + "x" * 40, grpc.StatusCode.UNAUTHENTICATED, None),
        ]:
            with pytest.raises(RpcFailure) as failure:
                world.client(token).execute(operation, params)
            assert failure.value.code == code, (operation, token, failure.value)
            if reason:
                assert failure.value.reason == reason, (operation, failure.value)
    # The owner's own calls work, and a missing hook is NOT_FOUND.
    client = world.client("alpha")
    assert client.execute("webhooks.test", by_id["webhooks.test"]).message_id.startswith("msg_")
    client.execute("webhooks.delete", by_id["webhooks.delete"])
    with pytest.raises(RpcFailure) as failure:
        client.execute("webhooks.delete", by_id["webhooks.delete"])
    assert (failure.value.code, failure.value.reason) == (grpc.StatusCode.NOT_FOUND, "WEBHOOK_NOT_FOUND")
