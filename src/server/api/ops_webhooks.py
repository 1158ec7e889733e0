"""Webhook operations: unpack, call, pack (see proto/geopera/v1/webhooks.proto)."""

from __future__ import annotations

from geopera.v1 import webhooks_pb2
from geopera_kernel.server.api import convert
from geopera_kernel.server.api.registry import Operation, OperationContext
from geopera_kernel.server.domain.webhooks import AttemptRecord, WebhookRecord
from geopera_kernel.server.services import Services


def webhook(record: WebhookRecord) -> webhooks_pb2.Webhook:
    return convert.mirror(webhooks_pb2.Webhook, record)


def attempt(record: AttemptRecord) -> webhooks_pb2.WebhookAttempt:
    return convert.mirror(webhooks_pb2.WebhookAttempt, record)


async def webhooks_create(
    s: Services, ctx: OperationContext, p: webhooks_pb2.WebhooksCreateParams
) -> webhooks_pb2.WebhooksCreateResult:
    hook, secret = await s.webhooks.create(
        ctx.principal, p.project_id, p.url, list(p.event_types), validate_only=ctx.validate_only
    )
    return webhooks_pb2.WebhooksCreateResult(webhook=webhook(hook), secret=secret)


async def webhooks_list(
    s: Services, ctx: OperationContext, p: webhooks_pb2.WebhooksListParams
) -> webhooks_pb2.WebhooksListResult:
    hooks, next_token = await s.webhooks.list(ctx.principal, p.project_id, p.page_size, p.page_token)
    return webhooks_pb2.WebhooksListResult(webhooks=[webhook(h) for h in hooks], next_page_token=next_token)


async def webhooks_delete(
    s: Services, ctx: OperationContext, p: webhooks_pb2.WebhooksDeleteParams
) -> webhooks_pb2.WebhooksDeleteResult:
    hook = await s.webhooks.delete(ctx.principal, p.webhook_id, validate_only=ctx.validate_only)
    return webhooks_pb2.WebhooksDeleteResult(webhook=webhook(hook))


async def webhooks_test(
    s: Services, ctx: OperationContext, p: webhooks_pb2.WebhooksTestParams
) -> webhooks_pb2.WebhooksTestResult:
    message_id, when = await s.webhooks.test(ctx.principal, p.webhook_id, validate_only=ctx.validate_only)
    return webhooks_pb2.WebhooksTestResult(message_id=message_id, enqueue_time=convert.timestamp(when))


async def webhooks_deliveries_list(
    s: Services, ctx: OperationContext, p: webhooks_pb2.WebhooksDeliveriesListParams
) -> webhooks_pb2.WebhooksDeliveriesListResult:
    hook, attempts, next_token = await s.webhooks.attempts(ctx.principal, p.webhook_id, p.page_size, p.page_token)
    return webhooks_pb2.WebhooksDeliveriesListResult(
        webhook=webhook(hook), attempts=[attempt(a) for a in attempts], next_page_token=next_token
    )


OPERATIONS = (
    Operation.declared(
        webhooks_pb2.WebhooksCreateParams,
        webhooks_pb2.WebhooksCreateResult,
        webhooks_create,
        "Subscribe a URL to a project's job events (Standard Webhooks); the secret is returned once.",
        validates_only=True,
    ),
    Operation.declared(
        webhooks_pb2.WebhooksListParams,
        webhooks_pb2.WebhooksListResult,
        webhooks_list,
        "List a project's webhooks.",
    ),
    Operation.declared(
        webhooks_pb2.WebhooksDeleteParams,
        webhooks_pb2.WebhooksDeleteResult,
        webhooks_delete,
        "Delete a webhook; nothing more is sent to it.",
        validates_only=True,
    ),
    Operation.declared(
        webhooks_pb2.WebhooksTestParams,
        webhooks_pb2.WebhooksTestResult,
        webhooks_test,
        "Send a webhook.test message to a webhook.",
        validates_only=True,
    ),
    Operation.declared(
        webhooks_pb2.WebhooksDeliveriesListParams,
        webhooks_pb2.WebhooksDeliveriesListResult,
        webhooks_deliveries_list,
        "A webhook's delivery log (every attempt), newest first.",
    ),
)
