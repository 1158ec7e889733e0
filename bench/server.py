"""The server every bench measures: a fresh database on the test PostgreSQL
(or an embedded one), a real `geopera serve` on it, and a watch on the
database's backends for the CPU accounting. Everything is torn down after."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bench.sql import BQ
from tests.support.db import DatabaseFactory, admin_url
from tests.support.server import ServerProcess
from tests.support.workers import granted_test_job_types


@dataclass
class BenchServer:
    tmp: Path
    url: str
    home: Path
    server: ServerProcess
    pg_version: str
    _admin: psycopg.Connection[Any]
    _dbname: str
    root_url: str = ""

    def pg_backends(self) -> list[int]:
        """PIDs of the PostgreSQL backends serving the bench's database."""
        rows = self._admin.execute(BQ.database_backends, {"dbname": self._dbname}).fetchall()
        return [r[0] for r in rows]

    def pg_background(self) -> list[int]:
        """PIDs of the cluster's background processes (WAL writer, checkpointer, ...)."""
        rows = self._admin.execute(BQ.background_backends)
        return [r[0] for r in rows.fetchall()]

    def activity_sampler(self, interval: float = 0.01) -> ActivitySampler:
        return ActivitySampler(self.root_url, self._dbname, interval)


class ActivitySampler:
    """Samples `pg_stat_activity` for one database from a thread with its own
    connection, between `start()` and `stop()`: how many of its client backends
    are busy on average, on what (`wait_event_type:wait_event`, `CPU` when not
    waiting), in which state, and which queries (first 100 characters)."""

    def __init__(self, root_url: str, dbname: str, interval: float) -> None:
        self.root_url, self.dbname, self.interval = root_url, dbname, interval
        self.samples = 0
        self.busy: Counter[str] = Counter()  # what active backends were doing, summed over samples
        self.states: Counter[str] = Counter()
        self.queries: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pg-activity", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        with psycopg.connect(self.root_url, autocommit=True) as conn:
            while not self._stop.is_set():
                rows = conn.execute(BQ.client_activity, {"dbname": self.dbname}).fetchall()
                self.samples += 1
                for state, wait_type, wait_event, query in rows:
                    self.states[state or "-"] += 1
                    if state == "active":
                        self.busy[f"{wait_type}:{wait_event}" if wait_type else "CPU"] += 1
                        self.queries[" ".join((query or "").split())] += 1
                    elif state == "idle in transaction":
                        self.queries["(idle in transaction) " + " ".join((query or "").split())] += 1
                time.sleep(self.interval)

    def per_sample(self, counter: Counter[str]) -> list[tuple[str, float]]:
        """(key, average backends per sample), most first."""
        return [(k, v / self.samples) for k, v in counter.most_common()] if self.samples else []


async def seed_project(url: str, home: Path, user_scopes: list[str]) -> dict[str, str]:
    """Project `bench` with credits, and tokens: `user` (``user_scopes`` on it), `admin`, `worker`."""
    from geopera_kernel.server.app import build_services
    from geopera_kernel.server.config import Settings

    services = await build_services(Settings(database_url=url, home=home, db_pool_size=2), url)
    try:
        await services.catalog.create_project("bench", "Bench")
        await services.credits.grant("bench", 1_000_000, "bench")
        _, user = await services.tokens.create_token(
            name="bench", kind="user", scopes=user_scopes, project_ids=["bench"]
        )
        _, admin = await services.tokens.create_token(name="admin", kind="admin", scopes=["admin"], project_ids=[])
        _, worker = await services.tokens.create_token(
            name="worker", kind="worker", scopes=["worker"], project_ids=[], job_type_ids=granted_test_job_types()
        )
        return {"user": user, "admin": admin, "worker": worker}
    finally:
        await services.db.close()


@contextmanager
def bench_server(prefix: str, name: str, extra_env: dict[str, str] | None = None) -> Iterator[BenchServer]:
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    # Registered before an embedded PostgreSQL can be started under `tmp`, so
    # (atexit being last-in, first-out) it runs after that server stopped.
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    factory: DatabaseFactory | None = None
    server: ServerProcess | None = None
    admin: psycopg.Connection[Any] | None = None
    try:
        root_url = admin_url(tmp)
        factory = DatabaseFactory(root_url)
        factory.prepare_template()
        url = factory.create()
        dbname = conninfo_to_dict(url)["dbname"]
        home = tmp / "server"
        print(f"[{name}] starting the server on database {dbname}", flush=True)
        server = ServerProcess(database_url=url, home=home, extra_env=extra_env).start(timeout=60)
        admin = psycopg.connect(root_url, autocommit=True)
        pg_version = admin.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        yield BenchServer(tmp, url, home, server, pg_version, admin, dbname, root_url)
    finally:
        if admin is not None:
            admin.close()
        if server is not None:
            server.stop()
        if factory is not None:
            factory.drop_all()
