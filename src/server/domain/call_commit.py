"""How a call that changes something commits: under its idempotency key, if it
has one (the key, the change and the response commit in one transaction, see
domain.idempotency), or not at all when it only validates (ExecuteRequest.validate_only,
AIP-163: every step runs, in a transaction that is then rolled back).

The projection that receives the call makes its CallCommit (api.spending.call_commit);
the domain service doing the change opens its transaction and records its outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg

from geopera_kernel.server.domain.idempotency import KeyedStore
from geopera_kernel.server.store import CommitProbe, Database

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class CallCommit(Generic[T]):
    """How the call whose outcome is `T` commits."""

    # The store of the call's outcome under its idempotency key; None without a key.
    keyed: KeyedStore[T] | None = None
    # Check everything, change nothing. Such a call never carries a key: the executor
    # runs it without one, as nothing is recorded under a key or replayed from it.
    validate_only: bool = False

    async def check(self, project_id: str) -> None:
        """Before slow work: raises Replayed when a finished call already answered the key."""
        if self.keyed is not None:
            await self.keyed.check(project_id)

    @asynccontextmanager
    async def transaction(
        self, db: Database, project_id: str, probe: CommitProbe | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The transaction of the change in `project_id`: the key's when the call has
        one, else a plain one, rolled back when its body ends if the call only validates."""
        if self.keyed is None or self.validate_only:
            async with db.transaction(probe, rollback=self.validate_only) as conn:
                yield conn
        else:
            async with self.keyed.transaction(project_id, probe) as conn:
                yield conn

    async def finish(self, conn: psycopg.AsyncConnection[Any], outcome: T) -> None:
        """Records `outcome` as the key's response, in this call's `transaction`: a call
        without a key, or one that only validates, records nothing."""
        if self.keyed is not None and not self.validate_only:
            await self.keyed.finish(conn, outcome)

    def adapt(self, widen: Callable[[U], T]) -> CallCommit[U]:
        """The same commit for a part of this call's outcome, `widen`ed to the whole by
        the caller that knows the rest (see KeyedStore.adapt)."""
        return CallCommit(self.keyed.adapt(widen) if self.keyed is not None else None, self.validate_only)


# A call that commits once, with no key: what a service call from the server itself is.
PLAIN_COMMIT: CallCommit[Any] = CallCommit()
