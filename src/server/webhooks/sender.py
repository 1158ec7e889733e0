"""The webhook outbox sender: every replica runs one; each claims due messages
(SKIP LOCKED, so no two send the same one at once), POSTs them signed, and
records the attempt: delivered, or retried with exponential backoff and jitter
until the retry window (a day by default) has passed. A hook whose attempts
fail `disable_after` times in a row is disabled. At least once: a sender that
dies mid-attempt leaves the message to be claimed again when its lease ends,
under the same `webhook-id` (receivers deduplicate on it)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from geopera_kernel.server import metrics
from geopera_kernel.server.backoff import Backoff
from geopera_kernel.server.store import Database, Q
from geopera_kernel.server.webhooks import signature
from geopera_kernel.server.webhooks.guard import DestinationRefused, parse_url, resolve_allowed

log = logging.getLogger(__name__)

# A receiver's answer is not read beyond this (only an error's first bytes are logged).
RESPONSE_READ_CAP = 1024
CLAIM_LIMIT = 32
# How long a finished message and its attempts stay in the delivery log.
MESSAGE_RETENTION_SECONDS = 7 * 86400.0

# A message's body from its outbox row (server/app.py renders the job as the API does).
RenderBody = Callable[[dict[str, Any]], dict[str, Any]]


# GEOPERA_WEBHOOKS_RETRY_BASE sets its base.
WEBHOOK_RETRY_BACKOFF = Backoff(base_seconds=5.0, max_seconds=3600.0, jitter=(0.5, 1.0))


@dataclass(frozen=True)
class SenderPolicy:
    allow_private: bool = False
    timeout_seconds: float = 10.0
    retry_backoff: Backoff = WEBHOOK_RETRY_BACKOFF
    retry_window_seconds: float = 86400.0
    disable_after: int = 20
    poll_seconds: float = 1.0


class GuardedResolver(AbstractResolver):
    """Resolves a hook's host at connect time and hands aiohttp only addresses
    the guard allows: the connection goes to the very addresses checked."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await resolve_allowed(host, port, self._allow_private)
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class Outcome:
    status_code: int
    latency_ms: float
    error: str

    @property
    def delivered(self) -> bool:
        return 200 <= self.status_code < 300 and not self.error


class WebhookSender:
    def __init__(self, db: Database, render: RenderBody, policy: SenderPolicy) -> None:
        self._db = db
        self._render = render
        self.policy = policy
        self.wakeup = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        self.wakeup.set()

    async def run(self) -> None:
        """Send until cancelled: due messages at once, then wait for a wakeup
        (a job event on this replica) or the poll interval (other replicas'
        events, retries coming due)."""
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy.allow_private), use_dns_cache=False)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        try:
            while True:
                self.wakeup.clear()
                try:
                    claimed = await self.send_due()
                except Exception:
                    log.exception("webhook sender failed")
                    claimed = 0
                if claimed >= CLAIM_LIMIT:
                    continue
                try:
                    await asyncio.wait_for(self.wakeup.wait(), self.policy.poll_seconds)
                except TimeoutError:
                    pass
        finally:
            await self._session.close()

    async def expire(self) -> str:
        """Forgets messages delivered or given up over a week ago (and their log)."""
        async with self._db.connection() as conn:
            cursor = await conn.execute(Q.expire_webhook_messages, {"retention_seconds": MESSAGE_RETENTION_SECONDS})
        return f"{cursor.rowcount} webhook messages expired" if cursor.rowcount else ""

    async def send_due(self) -> int:
        """Claims due messages and sends them concurrently: how many were claimed."""
        async with self._db.connection() as conn:
            rows = await (
                await conn.execute(
                    Q.claim_webhook_messages,
                    {"limit": CLAIM_LIMIT, "lease_seconds": self.policy.timeout_seconds + 30.0},
                )
            ).fetchall()
        if rows:
            await asyncio.gather(*(self._deliver(row) for row in rows))
        return len(rows)

    async def _deliver(self, row: dict[str, Any]) -> None:
        outcome = await self._post(row)
        metrics.WEBHOOK_DELIVERIES.labels("delivered" if outcome.delivered else "failed").inc()
        params = {
            "id": row["id"],
            "webhook_id": row["webhook_id"],
            "attempt": row["attempts"],
            "status_code": outcome.status_code,
            "latency_ms": outcome.latency_ms,
        }
        async with self._db.connection() as conn:
            if outcome.delivered:
                await conn.execute(Q.record_webhook_success, params)
                return
            result = await (
                await conn.execute(
                    Q.record_webhook_failure,
                    {
                        **params,
                        "error": outcome.error[:500],
                        "retry_in_seconds": self.policy.retry_backoff.delay(row["attempts"]),
                        "retry_window_seconds": self.policy.retry_window_seconds,
                        "disable_after": self.policy.disable_after,
                    },
                )
            ).fetchone()
        if result is not None and not result["enabled"]:
            log.warning("webhook %s disabled after %d failed attempts", row["webhook_id"], self.policy.disable_after)

    async def _post(self, row: dict[str, Any]) -> Outcome:
        assert self._session is not None
        body = json.dumps(self._render(row), separators=(",", ":")).encode()
        headers = signature.headers(row["secret"], row["id"], int(time.time()), body)
        headers["user-agent"] = "geopera-webhooks/1"
        start = time.perf_counter()

        def elapsed() -> float:
            return round((time.perf_counter() - start) * 1000, 3)

        try:
            target = parse_url(row["url"])
            # The resolver guards names; a literal address never reaches it.
            await resolve_allowed(target.host, target.port, self.policy.allow_private)
            async with asyncio.timeout(self.policy.timeout_seconds):
                async with self._session.post(
                    row["url"], data=body, headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
                    snippet = await response.content.read(RESPONSE_READ_CAP)
                    if response.content.at_eof():
                        response.release()  # read whole: the connection is kept for the next message
                    else:
                        response.close()  # never read beyond the cap
                    if 200 <= status < 300:
                        return Outcome(status, elapsed(), "")
                    text = snippet.decode("utf-8", "replace").strip()
                    where = (
                        f" (redirect to {response.headers.get('Location', '')[:200]} not followed)"
                        if 300 <= status < 400
                        else ""
                    )
                    return Outcome(status, elapsed(), f"HTTP {status}{where}: {text[:200]}")
        except DestinationRefused as refused:
            return Outcome(0, elapsed(), f"refused: {refused}")
        except TimeoutError:
            return Outcome(0, elapsed(), f"timed out after {self.policy.timeout_seconds:g} s")
        except Exception as err:  # any transport failure is the attempt's error, logged on the hook
            cause = err.__cause__ if isinstance(err.__cause__, DestinationRefused) else err
            return Outcome(0, elapsed(), f"{type(cause).__name__}: {cause}"[:500])
