"""Per-test PostgreSQL databases cloned from a migrated template.

`GEOPERA_TEST_DATABASE_URL` points at a server we may create databases on
(CI: the machine's PostgreSQL). Without it an embedded PostgreSQL is started
once per test session in a temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import queue
import secrets
import threading
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from geopera_kernel.server.store.database import migrate


def with_database(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def admin_url(tmp_root: Path) -> str:
    url = os.environ.get("GEOPERA_TEST_DATABASE_URL")
    if url:
        return url
    from geopera_kernel.server.store.database import start_embedded_postgres

    return start_embedded_postgres(tmp_root / "embedded-pg")


class DatabaseFactory:
    """Creates isolated databases: `CREATE DATABASE ... TEMPLATE` of one
    migrated template is a file copy, far faster than migrating each time."""

    # Every database any factory made, in order (the conftest checks the
    # credits of those a test module created when the module ends).
    created_urls: list[str] = []  # noqa: RUF012 - shared on purpose

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.prefix = f"geopera_t{os.getpid()}_{secrets.token_hex(3)}"
        self.template = f"{self.prefix}_tpl"
        self._created: list[str] = []
        self._counter = 0
        # Each DROP DATABASE costs PostgreSQL a checkpoint (~0.1 s): hundreds of them at the
        # session's end took over a minute. Databases nobody uses any more are dropped by a
        # thread while the next tests run (see `drop_unused_later`).
        self._to_drop: queue.Queue[str | None] = queue.Queue()
        self._dropper = threading.Thread(target=self._drop_queued, name="drop-databases", daemon=True)
        self._dropper.start()
        DatabaseFactory.current = self

    current: DatabaseFactory | None = None

    def _execute(self, sql: str) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql)

    def prepare_template(self) -> None:
        self._execute(f'CREATE DATABASE "{self.template}"')
        url = with_database(self.server_url, self.template)

        async def run() -> None:
            async with await psycopg.AsyncConnection.connect(url) as conn:
                await migrate(conn)

        asyncio.run(run())

    def create_empty(self) -> str:
        """A database without any migration (for upgrade tests)."""
        self._counter += 1
        name = f"{self.prefix}_{self._counter}"
        self._execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return with_database(self.server_url, name)

    def create(self) -> str:
        self._counter += 1
        name = f"{self.prefix}_{self._counter}"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self._created.append(name)
        url = with_database(self.server_url, name)
        DatabaseFactory.created_urls.append(url)
        return url

    def drop_unused_later(self, urls: list[str]) -> None:
        """Drop these databases in the background, each only if no session is connected to it:
        a package- or session-scoped server still running on one keeps it until `drop_all`."""
        for url in urls:
            name = conninfo_to_dict(url).get("dbname")
            if isinstance(name, str) and name in self._created:
                self._to_drop.put(name)

    def _drop_queued(self) -> None:
        while (name := self._to_drop.get()) is not None:
            try:
                self._execute(f'DROP DATABASE IF EXISTS "{name}"')  # no FORCE: refused while in use
            except psycopg.Error:
                continue
            self._created.remove(name)

    def drop_all(self) -> None:
        self._to_drop.put(None)
        self._dropper.join()
        for name in [*self._created, self.template]:
            try:
                self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error:
                pass
