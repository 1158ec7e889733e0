"""Per-project storage quotas.

A project's usage is the bytes of its item assets, its analytics artifacts and
its uploads waiting for `items.create`. Every write that adds bytes checks, in
its own transaction and after its inserts, that the usage stays within the
quota (the project's `storage_quota_bytes`, else the server default); the
project row is locked first, so concurrent writes of one project cannot both
slip under it. A refused write rolls back and its bytes are deleted.
"""

from __future__ import annotations

from typing import Any

import psycopg

from geopera_kernel.server.errors import Code, DomainError
from geopera_kernel.server.store import Q

DEFAULT_QUOTA_BYTES = 100 << 30


def quota_exceeded(project_id: str, used: int, quota: int) -> DomainError:
    return DomainError(
        Code.RESOURCE_EXHAUSTED,
        "QUOTA_EXCEEDED",
        f"project {project_id!r} would hold {used} bytes, more than its storage quota of {quota} bytes",
        metadata={"project_id": project_id, "quota_bytes": str(quota), "requested_bytes": str(used)},
    )


class StorageQuota:
    def __init__(self, default_bytes: int = DEFAULT_QUOTA_BYTES) -> None:
        self.default_bytes = default_bytes

    async def usage(self, conn: psycopg.AsyncConnection[Any], project_id: str) -> tuple[int, int]:
        """(bytes used, quota in bytes) of a project."""
        row = await (await conn.execute(Q.project_storage_usage, {"project_id": project_id})).fetchone()
        assert row is not None
        quota = row["quota_bytes"]
        return int(row["used_bytes"]), self.default_bytes if quota is None else int(quota)

    async def remaining(self, conn: psycopg.AsyncConnection[Any], project_id: str) -> int:
        """Bytes the project may still add (a hint: `check` decides)."""
        used, quota = await self.usage(conn, project_id)
        return max(0, quota - used)

    async def check(self, tx: psycopg.AsyncConnection[Any], project_id: str) -> None:
        """Inside the writing transaction, after its inserts: refuse when the
        project now holds more than its quota."""
        await tx.execute(Q.lock_project_quota, {"project_id": project_id})
        used, quota = await self.usage(tx, project_id)
        if used > quota:
            raise quota_exceeded(project_id, used, quota)
