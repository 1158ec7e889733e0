"""Bytes stored for a transaction that has not committed yet.

Objects are written under fresh, unique keys before the transaction that
references them commits (readers must never find a row without its bytes).
When the transaction fails, the objects are removed only if it surely rolled
back: an error in its body, or COMMIT answered by the server with a rollback.
When COMMIT was sent and the answer was lost (connection dropped, backend
terminated, call cancelled), the rows may exist: the bytes stay, and the
storage sweep removes them later if nothing references them.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import psycopg

from geopera_kernel.server.storage import BlobStorage, ObjectStorage
from geopera_kernel.server.store import CommitProbe

log = logging.getLogger(__name__)


def surely_rolled_back(probe: CommitProbe, error: BaseException) -> bool:
    """Whether a transaction that ended with `error` certainly committed nothing."""
    if probe.phase == "body":
        return True  # COMMIT was never sent
    if probe.phase == "committed":
        return False
    # COMMIT was sent: only a server answer that rolled it back is certain
    # (a deferred constraint or a serialization failure at commit).
    return isinstance(error, (psycopg.errors.IntegrityError, psycopg.errors.TransactionRollback))


class PendingObjects:
    """Tracks the objects one transaction is about to reference.

    pending = PendingObjects(storage)
    try:
        await pending.put(key, path)
        async with db.transaction(pending.probe) as conn:
            ...  # insert the rows naming `key`
    except BaseException as error:
        await pending.settle(error)
        raise
    """

    def __init__(self, storage: BlobStorage) -> None:
        self._storage = storage
        self.keys: list[str] = []
        self.probe = CommitProbe()

    async def put(self, key: str, source: Path) -> None:
        self.keys.append(key)  # before the write: a failed write may leave a partial file
        await asyncio.to_thread(self._storage.put_file, key, source)

    async def copy(self, storage: ObjectStorage, key: str, source_key: str) -> None:
        """Store a copy of the object `source_key` (inside the store) under `key`."""
        self.keys.append(key)
        await asyncio.to_thread(storage.copy, source_key, key)

    def move_now(self, key: str, source: Path) -> None:
        """`move_file`, for callers already on a worker thread."""
        self.keys.append(key)
        self._storage.move_file(key, source)

    async def settle(self, error: BaseException) -> bool:
        """After a failure: delete the objects when the transaction surely rolled
        back; returns whether it did."""
        if not self.keys:
            return True
        if not surely_rolled_back(self.probe, error):
            log.warning(
                "commit outcome unknown (%s); keeping %d stored object(s) for the storage sweep",
                type(error).__name__,
                len(self.keys),
            )
            return False
        for key in self.keys:
            await asyncio.to_thread(self._storage.delete, key)
        return True
