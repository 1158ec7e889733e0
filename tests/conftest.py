"""Shared fixtures: a PostgreSQL to create databases on, real server processes,
and a seeded world (projects, tokens, items) built with the domain services
against the same database the server uses."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import pytest

from geopera_kernel.server.auth import USER_SCOPES
from tests.support.client import KernelClient
from tests.support.db import DatabaseFactory, admin_url
from tests.support.process import ChildProcess
from tests.support.server import ServerProcess
from tests.support.workers import granted_test_job_types

if TYPE_CHECKING:
    from geopera_kernel.server.services import Services

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "s2_slovenia"
# Test-only plugins every test server loads (never shipped).
TEST_SERVER_ENV = {"GEOPERA_ANALYTICS_PLUGINS": "tests.support.analytics_plugins"}


def pytest_configure(config: pytest.Config) -> None:
    # Sessions share /tmp/pytest-of-<user> and each one resets it to mode 0700, while the
    # embedded PostgreSQL runs as another user that must traverse to its data directory:
    # a second session running beside this one failed its initdb. A folder of our own.
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="geopera-pytest-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


_OWN_BASETEMP = pytest.StashKey[str]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The folder goes when the session passed; a failed one keeps it to look into."""
    own = session.config.stash.get(_OWN_BASETEMP, None)
    if own is not None and exitstatus == 0:
        shutil.rmtree(own, ignore_errors=True)


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(admin_url(tmp_path_factory.mktemp("pg")))
    factory.prepare_template()
    yield factory
    factory.drop_all()


@pytest.fixture
def database_url(database_factory: DatabaseFactory) -> str:
    """A fresh, migrated database for one test."""
    return database_factory.create()


T = TypeVar("T")


@dataclass
class World:
    """A running server with two projects, tokens and the sample items."""

    server: ServerProcess
    database_url: str
    home: Path
    tokens: dict[str, str] = field(default_factory=dict)
    items: dict[str, str] = field(default_factory=dict)  # name -> id (project alpha)
    beta_items: dict[str, str] = field(default_factory=dict)
    channel: grpc.Channel | None = None

    def client(self, token_name: str | None) -> KernelClient:
        assert self.channel is not None
        token = None if token_name is None else self.tokens.get(token_name, token_name)
        return KernelClient(self.channel, token)

    def with_services(self, use: Callable[[Any], Awaitable[T]]) -> T:
        """Run `use(services)` with domain services on the world's database, as an admin would."""

        async def run() -> T:
            services = await _services(self.database_url, self.home)
            try:
                return await use(services)
            finally:
                await services.db.close()

        return asyncio.run(run())

    def make_token(
        self, *, scopes: list[str], projects: list[str], kind: str = "user", job_types: tuple[str, ...] = ()
    ) -> str:
        async def create(services: Any) -> str:
            _, token = await services.tokens.create_token(
                name="test", kind=kind, scopes=scopes, project_ids=projects, job_type_ids=job_types
            )
            return token

        return self.with_services(create)

    def revoke_token(self, token_id: str) -> None:
        async def revoke(services: Any) -> None:
            assert await services.tokens.revoke(token_id)

        self.with_services(revoke)

    def add_job_types(self, *records: Any) -> None:
        """Register job types (`JobTypeRecord`s) no worker declares, as built-ins are."""

        async def add(services: Any) -> None:
            for record in records:
                await services.jobs.upsert_job_type(record)

        self.with_services(add)


async def _services(url: str, home: Path) -> Services:
    from geopera_kernel.server.app import build_services
    from geopera_kernel.server.config import Settings

    return await build_services(Settings(database_url=url, home=home, db_pool_size=2), url)


async def seed_world(world: World) -> None:
    from geopera_kernel.server.demo import SYSTEM, sample_items

    services = await _services(world.database_url, world.home)
    try:
        for project in ("alpha", "beta"):
            await services.catalog.create_project(project, project.title())
            await services.credits.grant(project, 1000, "test grant")
        for project in ("alpha", "beta"):
            _, world.tokens[project] = await services.tokens.create_token(
                name=project, kind="user", scopes=list(USER_SCOPES), project_ids=[project]
            )
        _, world.tokens["admin"] = await services.tokens.create_token(
            name="admin", kind="admin", scopes=["admin"], project_ids=[]
        )
        _, world.tokens["worker"] = await services.tokens.create_token(
            name="worker", kind="worker", scopes=["worker"], project_ids=[], job_type_ids=granted_test_job_types()
        )
        for spec in sample_items(SAMPLES):
            item = await services.catalog.create_item(SYSTEM, dataclasses.replace(spec, project_id="alpha"))
            world.items[item.name] = item.id
        spec = sample_items(SAMPLES)[0]
        item = await services.catalog.create_item(SYSTEM, dataclasses.replace(spec, project_id="beta"))
        world.beta_items[item.name] = item.id
    finally:
        await services.db.close()


def start_seeded_world(database_url: str, home: Path, env: dict[str, str]) -> World:
    """A server on `database_url` with the seeded world; stopped again if seeding fails."""
    server = ServerProcess(database_url=database_url, home=home, extra_env=env).start()
    state = World(server=server, database_url=database_url, home=home)
    try:
        asyncio.run(seed_world(state))
    except BaseException:
        server.stop()
        raise
    state.channel = server.channel()
    return state


def stop_world(state: World) -> None:
    if state.channel is not None:
        state.channel.close()
    state.server.stop()


@pytest.fixture(scope="module")
def world(database_factory: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    state = start_seeded_world(database_factory.create(), tmp_path_factory.mktemp("world"), TEST_SERVER_ENV)
    try:
        yield state
    finally:
        stop_world(state)


def ledger_violations(url: str) -> list[str]:
    """Every project of one database whose credits do not add up: available +
    held + captured = granted, and the ledger replayed from the start lands on
    the balance (a `waive` records an uncharged excess and moves nothing). Read
    with plain SQL, not through the server under test."""
    import psycopg

    try:
        conn = psycopg.connect(url)
    except psycopg.OperationalError:
        return []  # dropped by its test
    with conn:
        accounts = conn.execute(
            "SELECT project_id, available, held, granted_total, captured_total FROM credit_accounts"
        ).fetchall()
        entries = conn.execute(
            "SELECT project_id, kind, amount, available_after, held_after FROM credit_ledger ORDER BY id"
        ).fetchall()
    replayed: dict[str, list[int]] = {}  # project -> [available, held, granted, captured]
    problems = []
    for project, kind, amount, available_after, held_after in entries:
        state = replayed.setdefault(project, [0, 0, 0, 0])
        move = {"grant": (amount, 0, amount, 0), "reserve": (-amount, amount, 0, 0),
                "capture": (0, -amount, 0, amount), "release": (amount, -amount, 0, 0),
                "waive": (0, 0, 0, 0)}[kind]  # fmt: skip
        state[:] = [a + b for a, b in zip(state, move, strict=True)]
        if (state[0], state[1]) != (available_after, held_after) or min(state) < 0:
            problems.append(f"{project}: after a {kind} of {amount} the ledger says {available_after}/{held_after}, "
                            f"the replay {state[0]}/{state[1]}")  # fmt: skip
    for project, available, held, granted, captured in accounts:
        if available + held + captured != granted:
            problems.append(f"{project}: {available} + {held} + {captured} != {granted}")
        if [available, held, granted, captured] != replayed.get(project, [0, 0, 0, 0]):
            problems.append(f"{project}: balance {[available, held, granted, captured]} != ledger replay "
                            f"{replayed.get(project)}")  # fmt: skip
    return problems


@pytest.fixture(scope="module", autouse=True)
def credits_add_up_at_the_end_of_the_module(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every module, each database it created (worlds and per-test
    databases alike) must have credits that add up, whatever its tests moved.
    Set up first and torn down last, so it reads after the module's servers stopped."""
    first = len(DatabaseFactory.created_urls)
    yield
    created = DatabaseFactory.created_urls[first:]
    problems = {url: found for url in created if (found := ledger_violations(url))}
    if DatabaseFactory.current is not None:
        DatabaseFactory.current.drop_unused_later(created)
    assert not problems, f"credits do not add up after {request.module.__name__}: {problems}"


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session() -> Iterator[None]:
    """A safety net: whatever a failed fixture left running is stopped."""
    yield
    ChildProcess.stop_all()
