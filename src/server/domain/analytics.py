"""analytics.execute: resolve the items a method reads (with access checks),
run the method off the event loop, and store its artifacts in the project."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pydantic import BaseModel

from geopera_kernel.analytics import AnalyticsContext, Artifact, ItemView, MethodRegistry
from geopera_kernel.analytics.registry import json_safe
from geopera_kernel.raster import tracing
from geopera_kernel.raster.digest import size_and_sha256
from geopera_kernel.server import metrics
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.artifacts import StoredArtifact
from geopera_kernel.server.domain.call_commit import PLAIN_COMMIT, CallCommit
from geopera_kernel.server.domain.catalog import CatalogService
from geopera_kernel.server.domain.pending_objects import PendingObjects
from geopera_kernel.server.domain.quota import StorageQuota
from geopera_kernel.server.errors import Code, DomainError, invalid_argument
from geopera_kernel.server.ids import new_id
from geopera_kernel.server.storage import BlobStorage
from geopera_kernel.server.store import Database, Q
from geopera_kernel.server.warm_pool import WarmThreadPool

# Threads each call may use for block decoding; with the call pool below this
# keeps a 2-core machine busy without oversubscribing it.
THREADS_PER_CALL = 2
CONCURRENT_CALLS = 4


@dataclass(frozen=True)
class AnalyticsOutcome:
    method: str
    result: dict[str, Any]
    artifacts: list[StoredArtifact]
    # A validate-only call's answer (see AnalyticsMethod.pixels_to_read), and
    # whether it is over the synchronous limit (then only a job may run it).
    pixels_to_read: int | None = None
    exceeds_sync_max_pixels: bool = False
    sync_max_pixels: int = 0


@dataclass(frozen=True)
class PreparedCall:
    """An analytics call checked and resolved, ready to plan or run."""

    name: str
    params: dict[str, Any]
    model: BaseModel
    items: dict[str, ItemView]
    projects: frozenset[str]
    # The method's plan, made by pixels_to_read and taken by the run (AnalyticsContext.plans).
    plans: dict[str, Any] = field(default_factory=dict)


class AnalyticsService:
    def __init__(
        self,
        db: Database,
        storage: BlobStorage,
        catalog: CatalogService,
        methods: MethodRegistry,
        quota: StorageQuota | None = None,
        sync_max_pixels: int = 0,
    ) -> None:
        self._db = db
        # Largest synchronous call in pixels read; 0: no limit.
        self.sync_max_pixels = sync_max_pixels
        self._quota = self.quota = quota or StorageQuota()
        self._storage = storage
        self._catalog = catalog
        self.methods = methods
        # Calls run one after another keep to one thread and its caches (see WarmThreadPool).
        self._pool = WarmThreadPool(CONCURRENT_CALLS, thread_name_prefix="analytics")
        self._cleanups: set[asyncio.Future[None]] = set()

    def _method_name(self, name: str) -> str:
        if not name:
            raise invalid_argument("OPERATION_REQUIRED", "operation is required (e.g. zonal_stats)", field="operation")
        if name not in self.methods:
            raise self.methods.unknown(name)
        return name

    def describe(self, name: str) -> dict[str, Any]:
        if name not in self.methods:
            raise self.methods.unknown(name, Code.NOT_FOUND)
        return self.methods.describe(name)

    def describe_all(self) -> list[dict[str, Any]]:
        return [self.methods.describe(name) for name in self.methods.names()]

    async def prepare(self, principal: Principal, name: str, params: dict[str, Any]) -> PreparedCall:
        """The params validated and the items they name resolved, with the
        caller's access checked: everything but the run."""
        name = self._method_name(name)
        # In a thread: validating the params parses the client's geometries.
        model = await asyncio.to_thread(self.methods.validate, name, params)
        method = self.methods.get(name)
        items = {}
        projects = set()
        for item_id in dict.fromkeys(method.item_ids(model)):
            record = await self._catalog.get_item(principal, item_id)
            items[record.id] = ItemView.of(record, record.assets, lambda a: self._storage.local_path(a.storage_key))
            projects.add(record.project_id)
        return PreparedCall(name, params, model, items, frozenset(projects))

    async def pixels_to_read(self, call: PreparedCall) -> int | None:
        """The method's plan: the pixels it would read, from headers and params only."""
        context = AnalyticsContext(
            items=call.items, artifact_dir=self._storage.scratch_dir(), workers=1, plans=call.plans
        )
        plan = functools.partial(self.methods.pixels_to_read, call.name, call.model, context)
        return await asyncio.get_running_loop().run_in_executor(self._pool, plan)

    def exceeds_sync_limit(self, pixels: int | None) -> bool:
        return bool(self.sync_max_pixels) and pixels is not None and pixels > self.sync_max_pixels

    async def execute(
        self,
        principal: Principal,
        name: str,
        params: dict[str, Any],
        *,
        commit: CallCommit[AnalyticsOutcome] = PLAIN_COMMIT,
    ) -> AnalyticsOutcome:
        """Run a method and store its artifacts in the project of the items it
        read. Under a key (`commit.keyed`), the call is idempotent per that project
        (a call reading items of several projects stores nothing and needs no key).
        With `commit.validate_only`, the same params and access checks, then the
        method's plan (the pixels it would read) instead of its run. A call
        over more pixels than `sync_max_pixels` is refused before reading any
        (RESOURCE_EXHAUSTED USE_ANALYTICS_JOB): it runs as a job instead."""
        call = await self.prepare(principal, name, params)
        if commit.validate_only:
            pixels = await self.pixels_to_read(call)
            return AnalyticsOutcome(
                call.name, {}, [], pixels_to_read=pixels, exceeds_sync_max_pixels=self.exceeds_sync_limit(pixels),
                sync_max_pixels=self.sync_max_pixels,
            )  # fmt: skip
        # Artifacts belong to the project of the items they were computed from.
        project_id = next(iter(call.projects)) if len(call.projects) == 1 else None
        if project_id is None:
            commit = PLAIN_COMMIT
        else:
            await commit.check(project_id)  # a retry of a finished call replays without recomputing
        result, artifacts, workdir = await self.run(call, within_sync_limit=bool(self.sync_max_pixels))
        try:
            return await self._store(principal, call.name, project_id, result, artifacts, commit)
        finally:
            self._remove_later(workdir)

    def _refuse_over_sync_limit(self, call: PreparedCall, context: AnalyticsContext) -> None:
        """In the run's thread, before any pixel is read: the method's plan (which the run then
        takes from `context.plans`), and RESOURCE_EXHAUSTED `USE_ANALYTICS_JOB` when it reads
        more than a synchronous call may."""
        pixels = self.methods.pixels_to_read(call.name, call.model, context)
        if self.exceeds_sync_limit(pixels):
            raise DomainError(
                Code.RESOURCE_EXHAUSTED,
                "USE_ANALYTICS_JOB",
                f"this call reads {pixels} pixels, more than the {self.sync_max_pixels} a synchronous call may: "
                "run it as a job with analytics.submit",
                metadata={"pixels_to_read": str(pixels), "sync_max_pixels": str(self.sync_max_pixels)},
            )

    async def run(
        self, call: PreparedCall, *, within_sync_limit: bool = False
    ) -> tuple[dict[str, Any], list[Artifact], Path]:
        """The method's run: its result and the files it wrote, in a work directory the
        caller stores from and then removes (`_remove_later`). With `within_sync_limit`,
        refused first, in the same thread job (one hand-off to a thread per call, not two),
        when it would read more pixels than `sync_max_pixels`."""
        # Reserved, not created: most calls write no file (the method creates it when it does).
        workdir = self._storage.scratch_dir() / f"analytics-{call.name}-{secrets.token_hex(8)}"
        cancelled = threading.Event()

        def check_cancelled() -> None:
            if cancelled.is_set():
                raise DomainError(Code.CANCELLED, "CALL_CANCELLED", "the call was cancelled or its deadline passed")

        context = AnalyticsContext(
            items=call.items,
            artifact_dir=workdir,
            workers=THREADS_PER_CALL,
            cancel_check=check_cancelled,
            scratch_dir=workdir,
            plans=call.plans,
        )
        started = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            method_run = functools.partial(self.methods.run, call.name, call.params, context, validated=call.model)

            def run() -> dict[str, Any]:
                if within_sync_limit:
                    self._refuse_over_sync_limit(call, context)
                return method_run()

            with tracing.tracer().start_as_current_span(f"analytics {call.name}"):
                # In the call's context: the method's log lines carry its trace id, and
                # `carry_trace` hands the trace on to the tasks it spreads (Dask).
                future = loop.run_in_executor(self._pool, contextvars.copy_context().run, run)
                try:
                    result = await asyncio.shield(future)
                except asyncio.CancelledError:
                    cancelled.set()  # the thread stops at its next block
                    raise
        except BaseException:
            self._remove_later(workdir)
            raise
        safe = json_safe(result)
        pixels = safe.get("pixels_read") if isinstance(safe, dict) else None
        metrics.analytics_ran(call.name, pixels if isinstance(pixels, int) else 0, time.perf_counter() - started)
        return safe, list(context.artifacts), workdir

    def _remove_later(self, workdir: Path) -> None:
        if workdir.exists():
            # Removed in the background: the caller need not wait for it.
            cleanup = asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, workdir, True)
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)

    async def _store(
        self,
        principal: Principal,
        method: str,
        project_id: str | None,
        result: dict[str, Any],
        artifacts: list[Artifact],
        commit: CallCommit[AnalyticsOutcome],
    ) -> AnalyticsOutcome:
        if not artifacts and commit.keyed is None:
            return AnalyticsOutcome(method, result, [])
        if project_id is None:
            raise invalid_argument(
                "ITEMS_IN_SEVERAL_PROJECTS", "an analytics call that stores files must read items of one project"
            )
        stored: list[StoredArtifact] = []
        outcome = AnalyticsOutcome(method, result, stored)
        pending = PendingObjects(self._storage)
        try:
            rows = await asyncio.to_thread(move_artifacts, pending, project_id, artifacts)
            async with commit.transaction(self._db, project_id, pending.probe) as conn:
                stored += await insert_artifacts(conn, rows, project_id, method, principal.id)
                if rows:
                    await self._quota.check(conn, project_id)
                await commit.finish(conn, outcome)
        except BaseException as error:
            # Also when the key turned out to be taken: the duplicate's files go.
            await pending.settle(error)
            raise
        return outcome


MovedArtifact = tuple[str, str, int, str, Artifact]  # id, storage key, size, sha256, the method's file


def move_artifacts(pending: PendingObjects, project_id: str, artifacts: list[Artifact]) -> list[MovedArtifact]:
    """In a thread: every file into storage (hashed before the move: the call's files are ours
    to consume), pending until the transaction recording them commits."""
    moved = []
    for artifact in artifacts:
        artifact_id = new_id("art")
        suffix = Path(artifact.path).suffix or ".bin"
        storage_key = f"projects/{project_id}/artifacts/{artifact_id}{suffix}"
        size, sha = size_and_sha256(Path(artifact.path))
        pending.move_now(storage_key, Path(artifact.path))
        moved.append((artifact_id, storage_key, size, sha, artifact))
    return moved


async def insert_artifacts(
    conn: psycopg.AsyncConnection[Any],
    rows: list[MovedArtifact],
    project_id: str,
    method: str,
    created_by: str,
    job_id: str | None = None,
) -> list[StoredArtifact]:
    for artifact_id, storage_key, size, sha, artifact in rows:
        await conn.execute(
            Q.insert_artifact,
            {
                "id": artifact_id,
                "project_id": project_id,
                "operation": method,
                "key": artifact.key,
                "title": artifact.title,
                "storage_key": storage_key,
                "media_type": artifact.media_type,
                "size_bytes": size,
                "sha256": sha,
                "created_by": created_by,
                "job_id": job_id,
            },
        )
    return [stored_artifact(row) for row in rows]


def stored_artifact(moved: MovedArtifact) -> StoredArtifact:
    """What the call answers of a file it stored."""
    artifact_id, _, size, sha, artifact = moved
    return StoredArtifact(artifact.key, artifact.media_type, artifact.title, size, sha, id=artifact_id)
