"""Webhooks: a project's subscriptions to its job events (issue 13.3).

Messages are enqueued by job_events' trigger (migration 0015) in the statement
that writes each job event (the outbox row commits with the event) and sent by
webhooks.sender from any replica."""

from __future__ import annotations

import builtins  # `list` is a method of WebhookService
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.errors import invalid_argument, not_found
from geopera_kernel.server.ids import new_id
from geopera_kernel.server.pagination import decode_page_token, encode_page_token, page, page_size_or_default
from geopera_kernel.server.store import Database, Q
from geopera_kernel.server.validation import require_known
from geopera_kernel.server.webhooks.guard import check_url
from geopera_kernel.server.webhooks.signature import new_secret

# What a hook may subscribe to: `job.` + a job event type (see JobEvent in the
# proto), and `webhook.test` (sent by webhooks.test whatever the subscription).
JOB_EVENT_TYPES = (
    "job.created", "job.dispatched", "job.assigned", "job.running", "job.progress",
    "job.retrying", "job.succeeded", "job.failed", "job.cancelled",
)  # fmt: skip
TEST_EVENT_TYPE = "webhook.test"
MAX_HOOKS_PER_PROJECT = 100
# Consecutive failed attempts after which a hook is disabled (GEOPERA_WEBHOOKS_DISABLE_AFTER).
DEFAULT_DISABLE_AFTER = 20


@dataclass(frozen=True)
class WebhookRecord:
    id: str
    project_id: str
    url: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str
    consecutive_failures: int
    create_time: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> WebhookRecord:
        return cls(
            row["id"], row["project_id"], row["url"], list(row["event_types"]), row["enabled"],
            row["disabled_reason"], row["consecutive_failures"], row["create_time"],
        )  # fmt: skip


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of the delivery log."""

    message_id: str
    event_type: str
    job_id: str
    attempt: int
    attempt_time: datetime
    status_code: int
    latency_ms: float
    error: str
    message_state: str


class WebhookService:
    def __init__(self, db: Database, *, allow_private: bool = False) -> None:
        self._db = db
        self.allow_private = allow_private
        # Set when a message is enqueued on this replica outside a job event
        # (webhooks.test): the sender wakes at once rather than at its next poll.
        self.on_enqueue: list[Callable[[], None]] = []

    async def create(
        self,
        principal: Principal,
        project_id: str,
        url: str,
        event_types: builtins.list[str],
        *,
        validate_only: bool = False,
    ) -> tuple[WebhookRecord, str]:
        """The new hook and its signing secret (shown this once)."""
        if not project_id:
            raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")
        principal.require_project(project_id)
        if not event_types:
            raise invalid_argument(
                "EVENT_TYPES_REQUIRED", "event_types names at least one event type", field="event_types"
            )
        require_known(
            event_types, JOB_EVENT_TYPES, reason="UNKNOWN_EVENT_TYPE", field="event_types", unknown="unknown event type"
        )
        await check_url(url, self.allow_private)
        secret = new_secret()
        async with self._db.transaction(rollback=validate_only) as tx:
            project = await (await tx.execute(Q.get_project, {"id": project_id})).fetchone()
            if project is None:
                raise not_found("PROJECT_NOT_FOUND", f"project {project_id!r} does not exist", project_id=project_id)
            count = await (await tx.execute(Q.count_webhooks, {"project_id": project_id})).fetchone()
            if count is not None and count["n"] >= MAX_HOOKS_PER_PROJECT:
                raise invalid_argument(
                    "TOO_MANY_WEBHOOKS",
                    f"a project has at most {MAX_HOOKS_PER_PROJECT} webhooks; delete one first",
                    field="project_id",
                )
            row = await (
                await tx.execute(
                    Q.insert_webhook,
                    {
                        "id": "" if validate_only else new_id("wh"),
                        "project_id": project_id,
                        "url": url,
                        "event_types": list(dict.fromkeys(event_types)),
                        "secret": secret,
                    },
                )
            ).fetchone()
        assert row is not None
        return WebhookRecord.from_row(row), "" if validate_only else secret

    async def list(
        self, principal: Principal, project_id: str, page_size: int, page_token: str
    ) -> tuple[builtins.list[WebhookRecord], str]:
        if not project_id:
            raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")
        principal.require_project(project_id)
        limit = page_size_or_default(page_size)
        filters = {"project_id": project_id}
        cursor = decode_page_token(page_token, filters) or {"t": "1970-01-01T00:00:00+00:00", "i": ""}
        async with self._db.connection() as conn:
            rows = await (
                await conn.execute(
                    Q.list_webhooks,
                    {"project_id": project_id, "after_time": cursor["t"], "after_id": cursor["i"], "limit": limit + 1},
                )
            ).fetchall()
        return page(
            rows, limit, WebhookRecord.from_row, lambda last: {"t": last.create_time.isoformat(), "i": last.id}, filters
        )

    async def get(self, principal: Principal, webhook_id: str) -> WebhookRecord:
        if not webhook_id:
            raise invalid_argument("WEBHOOK_ID_REQUIRED", "webhook_id is required", field="webhook_id")
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_webhook, {"id": webhook_id})).fetchone()
        if row is None:
            raise not_found("WEBHOOK_NOT_FOUND", f"webhook {webhook_id[:64]!r} does not exist", webhook_id=webhook_id)
        hook = WebhookRecord.from_row(row)
        principal.require_project(hook.project_id)  # as jobs and items answer another project's
        return hook

    async def delete(self, principal: Principal, webhook_id: str, *, validate_only: bool = False) -> WebhookRecord:
        """Deletes the hook: nothing more is sent to it, pending messages included."""
        hook = await self.get(principal, webhook_id)
        if not validate_only:
            async with self._db.transaction() as tx:
                await tx.execute(Q.delete_webhook, {"id": webhook_id})
        return hook

    async def test(self, principal: Principal, webhook_id: str, *, validate_only: bool = False) -> tuple[str, datetime]:
        """Enqueues a `webhook.test` message to the hook: its id and time."""
        hook = await self.get(principal, webhook_id)
        if validate_only:
            return "", hook.create_time
        async with self._db.transaction() as tx:
            row = await (
                await tx.execute(Q.enqueue_test_message, {"id": new_id("msg"), "webhook_id": hook.id})
            ).fetchone()
        assert row is not None
        for wake in self.on_enqueue:
            wake()
        return row["id"], row["event_time"]

    async def attempts(
        self, principal: Principal, webhook_id: str, page_size: int, page_token: str
    ) -> tuple[WebhookRecord, builtins.list[AttemptRecord], str]:
        """The hook's delivery log, newest attempt first."""
        hook = await self.get(principal, webhook_id)
        limit = page_size_or_default(page_size)
        filters = {"webhook_id": webhook_id}
        cursor = decode_page_token(page_token, filters) or {"b": 2**62}
        # One snapshot for the log and the hook read again: the failures counted on the hook are
        # those listed, and a disabled hook's log holds the attempt that disabled it.
        async with self._db.snapshot() as conn:
            rows = await (
                await conn.execute(
                    Q.list_webhook_attempts, {"webhook_id": webhook_id, "before_id": cursor["b"], "limit": limit + 1}
                )
            ).fetchall()
            now = await (await conn.execute(Q.get_webhook, {"id": webhook_id})).fetchone()
        hook = WebhookRecord.from_row(now) if now is not None else hook
        attempts = [
            AttemptRecord(
                r["delivery_id"],
                r["event_type"],
                r["job_id"],
                r["attempt"],
                r["attempt_time"],
                r["status_code"],
                r["latency_ms"],
                r["error"],
                r["state"],
            )
            for r in rows[:limit]
        ]
        next_token = encode_page_token({"b": rows[limit - 1]["id"]}, filters) if len(rows) > limit else ""
        return hook, attempts, next_token
