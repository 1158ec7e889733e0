"""Idempotency keys of spend operations and of analytics.execute.

Keys are scoped per project (as Stripe scopes them per account): a retry from
any token of the project - a second one, or the one that replaced a rotated
token - finds the key, and projects never see each other's keys.

The key row is written in the same transaction as the side effect. A second
request with the same key blocks on the key's primary key until the first
transaction ends: if it committed, the stored response is replayed; if it
rolled back (e.g. too few credits), the second request runs for real. So
concurrent duplicates never create a second job.

analytics.execute claims its key only in the transaction that stores its
artifacts, after the computation (which holds no connection): a concurrent
duplicate computes too, then finds the key taken, drops its files and replays
the first response; a later retry finds the response with `peek` first.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg

from server.errors import Code, DomainError, failed_precondition
from server.store import Q

KEY_TTL_SECONDS = 48 * 3600.0  # the default; the contract promises at least 24 h
LOCK_WAIT = "15s"


def fingerprint(operation: str, params: bytes) -> bytes:
    return hashlib.sha256(operation.encode() + b"\0" + params).digest()


async def claim(
    conn: psycopg.AsyncConnection[Any],
    project_id: str,
    principal_id: str,
    key: str,
    operation: str,
    print_: bytes,
    *,
    ttl_seconds: float = KEY_TTL_SECONDS,
) -> bytes | None:
    """Inside the caller's transaction: returns the response to replay, or
    None when this request owns the key and must do the work. `principal_id`
    (the token) is kept for the record only."""
    await conn.execute(Q.idempotency_lock_timeout, {"timeout": LOCK_WAIT})
    params = {"project_id": project_id, "key": key}
    for _ in range(2):
        try:
            inserted = await (
                await conn.execute(
                    Q.claim_idempotency_key,
                    {
                        **params,
                        "principal_id": principal_id,
                        "operation": operation,
                        "fingerprint": print_,
                        "ttl_seconds": ttl_seconds,
                    },
                )
            ).fetchone()
        except psycopg.errors.LockNotAvailable as exc:
            raise DomainError(
                Code.ABORTED,
                "IDEMPOTENCY_KEY_IN_USE",
                "a request with this idempotency key is still running; retry shortly",
            ) from exc
        if inserted is not None:
            return None
        row = await (await conn.execute(Q.get_idempotency_key, params)).fetchone()
        if row is None:
            continue  # deleted meanwhile by the expiry sweep
        if row["expired"]:
            await conn.execute(Q.delete_idempotency_key, params)
            continue
        _check_same_request(row, operation, print_)
        return bytes(row["response"])
    raise DomainError(Code.ABORTED, "IDEMPOTENCY_KEY_IN_USE", "the idempotency key is changing; retry")


async def peek(
    conn: psycopg.AsyncConnection[Any], project_id: str, key: str, operation: str, print_: bytes
) -> bytes | None:
    """Without claiming: the stored response of this request, if the key holds
    one (a retry of a finished call need not redo slow work before `claim`).
    Refuses a key used for another request as `claim` does."""
    row = await (await conn.execute(Q.get_idempotency_key, {"project_id": project_id, "key": key})).fetchone()
    if row is None or row["expired"]:
        return None
    _check_same_request(row, operation, print_)
    return bytes(row["response"])


def _check_same_request(row: dict[str, Any], operation: str, print_: bytes) -> None:
    if row["operation"] != operation or bytes(row["fingerprint"]) != print_:
        raise failed_precondition(
            "IDEMPOTENCY_KEY_REUSED",
            "this idempotency key was used for a different request; use a new key for new work",
            operation=row["operation"],
        )


async def record(conn: psycopg.AsyncConnection[Any], project_id: str, key: str, response: bytes) -> None:
    await conn.execute(Q.finish_idempotency_key, {"project_id": project_id, "key": key, "response": response})


async def expire(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(Q.expire_idempotency_keys)
