"""Readiness (`/readyz`): the database answers, and every migration this build
ships is applied to it. A problem is an UNAVAILABLE `DomainError` naming it."""

from __future__ import annotations

import asyncio
import functools

import psycopg

from geopera_kernel.server.errors import Code, DomainError
from geopera_kernel.server.store import Database, Q
from geopera_kernel.server.store.database import load_migrations

# A probe must answer well inside a load balancer's check timeout (often 5 s).
READY_CHECK_SECONDS = 2.0


@functools.cache
def _shipped_migrations() -> dict[int, str]:
    return {migration.version: migration.name for migration in load_migrations()}


async def check_ready(db: Database, within_seconds: float = READY_CHECK_SECONDS) -> None:
    """Returns when the server can serve calls; raises UNAVAILABLE
    `DATABASE_UNREACHABLE` or `MIGRATIONS_PENDING` otherwise."""
    try:
        async with asyncio.timeout(within_seconds), db.pool.connection(timeout=within_seconds) as conn:
            rows = await (await conn.execute(Q.applied_migrations)).fetchall()
    except (psycopg.Error, TimeoutError) as exc:
        # psycopg_pool's PoolTimeout is a psycopg.OperationalError.
        raise DomainError(
            Code.UNAVAILABLE,
            "DATABASE_UNREACHABLE",
            f"the database did not answer within {within_seconds:g} s ({type(exc).__name__})",
        ) from exc
    applied = {row["version"] for row in rows}
    pending = [name for version, name in sorted(_shipped_migrations().items()) if version not in applied]
    if pending:
        raise DomainError(Code.UNAVAILABLE, "MIGRATIONS_PENDING", f"migrations not applied yet: {', '.join(pending)}")
