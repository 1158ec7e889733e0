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

The projection that receives a call makes its KeyedCall; the domain service
doing the side effect opens the key's transaction itself (KeyedStore, carried
in the call's domain.call_commit.CallCommit).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.errors import Code, DomainError, failed_precondition
from geopera_kernel.server.store import CommitProbe, Database, Q

T = TypeVar("T")
U = TypeVar("U")

KEY_TTL_SECONDS = 48 * 3600.0  # the default; the contract promises at least 24 h


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
    await conn.execute(Q.set_claim_lock_timeout)
    params = {"project_id": project_id, "key": key}
    claim_params = {
        **params,
        "principal_id": principal_id,
        "operation": operation,
        "fingerprint": print_,
        "ttl_seconds": ttl_seconds,
    }
    for _ in range(2):
        try:
            inserted = await (await conn.execute(Q.claim_idempotency_key, claim_params)).fetchone()
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


async def expire_keys(db: Database) -> None:
    """The sweep: drops every expired key."""
    async with db.connection() as conn:
        await expire(conn)


class Replayed(Exception):
    """The call's key already holds a response: answer it instead."""

    def __init__(self, response: bytes) -> None:
        super().__init__("idempotent replay")
        self.response = response


@dataclass
class KeyedCall:
    """A call with an idempotency key, for the operation `operation` whose
    params have `fingerprint`."""

    db: Database
    principal: Principal
    key: str
    operation: str
    fingerprint: bytes
    ttl_seconds: float = KEY_TTL_SECONDS
    project_id: str = ""

    async def check(self, project_id: str) -> None:
        """Raises Replayed when a finished call already answered this key."""
        self.principal.require_project(project_id)  # before a stored response can be replayed
        async with self.db.transaction() as conn:
            replay = await peek(conn, project_id, self.key, self.operation, self.fingerprint)
        if replay is not None:
            raise Replayed(replay)

    @asynccontextmanager
    async def transaction(
        self, project_id: str, probe: CommitProbe | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The key's transaction: raises Replayed when a concurrent duplicate
        committed first (waiting for it if it is committing)."""
        self.principal.require_project(project_id)
        async with self.db.transaction(probe) as conn:
            replay = await claim(
                conn, project_id, self.principal.id, self.key, self.operation, self.fingerprint,
                ttl_seconds=self.ttl_seconds,
            )  # fmt: skip
            if replay is not None:
                raise Replayed(replay)
            self.project_id = project_id
            yield conn

    async def record(self, conn: psycopg.AsyncConnection[Any], response: bytes) -> None:
        await record(conn, self.project_id, self.key, response)


@dataclass(frozen=True)
class KeyedStore(Generic[T]):
    """How a service stores the outcome `T` of a keyed call: `check(project_id)`
    before slow work may answer a stored response at once (by raising
    Replayed); `transaction(project_id, probe)` claims the key (or raises
    Replayed with the response a concurrent duplicate stored) and
    `finish(conn, outcome)` records the response, `encode`d by the projection,
    in it: the key, the side effect and the response commit together."""

    call: KeyedCall
    encode: Callable[[T], bytes]

    async def check(self, project_id: str) -> None:
        await self.call.check(project_id)

    def transaction(
        self, project_id: str, probe: CommitProbe | None = None
    ) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        return self.call.transaction(project_id, probe)

    async def finish(self, conn: psycopg.AsyncConnection[Any], outcome: T) -> None:
        await self.call.record(conn, self.encode(outcome))

    def adapt(self, widen: Callable[[U], T]) -> KeyedStore[U]:
        """The store of a part of this call's outcome, `widen`ed to the whole
        by the caller that knows the rest."""
        return KeyedStore(self.call, lambda outcome: self.encode(widen(outcome)))
