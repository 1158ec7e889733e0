"""analytics.submit: an analytics call run as a job of the built-in type
`analytics`, with no synchronous pixel limit.

The job runs on the server, through the job machinery (rows, events, cancel,
`processing.jobs.get`), not on a worker: the analytics engine reads the
catalogue's assets through the server's storage and item access checks, and
the layering rule (tests/test_layering.py) keeps the worker from importing
the server. Moving the engine into the shared `raster` package would also need
a way for workers to read every source asset and to store artifacts (workers
only register items); the server already has both. The synchronous call and
the job share one code path (AnalyticsService.prepare/run), so they answer the
same. Analytics are not a spend (the product docs: processing jobs reserve
credits, analytics computes over existing items), so these jobs hold and
charge 0 credits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from geopera_kernel.analytics import Artifact
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.analytics import (
    AnalyticsOutcome,
    AnalyticsService,
    PreparedCall,
    StoredArtifact,
    insert_artifacts,
    move_artifacts,
)
from geopera_kernel.server.domain.idempotency import KeyedStore, keyed_transaction
from geopera_kernel.server.domain.jobs import JobRecord, JobService, Notifications
from geopera_kernel.server.domain.jobs.creation import require_input_size
from geopera_kernel.server.domain.jobs.records import JobError
from geopera_kernel.server.domain.jobs.server_runs import ANALYTICS_JOB_TYPE_ID
from geopera_kernel.server.domain.pending_objects import PendingObjects
from geopera_kernel.server.errors import Code, DomainError, invalid_argument
from geopera_kernel.server.storage import BlobStorage
from geopera_kernel.server.store import Database
from geopera_kernel.server.validation import require_finite_json

log = logging.getLogger(__name__)

ANALYTICS_JOB_DESCRIPTION = (
    "An analytics method run as a job (analytics.submit): its JSON result and files are the job's "
    "output artifacts. Created only by analytics.submit; costs no credits."
)
ANALYTICS_JOB_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "AnalyticsJobInput",
    "properties": {
        "operation": {"type": "string", "description": "The analytics method, e.g. zonal_stats."},
        "params": {"type": "object", "description": "The method's params, as analytics.execute takes them."},
    },
    "required": ["operation", "params"],
}
RESULT_KEY = "result"

# The JSON answer of the synchronous call for an outcome (the projection renders it).
RenderResult = Callable[[AnalyticsOutcome], bytes]


class _JobAlreadyEnded(Exception):
    """The job was cancelled while it ran: its files are dropped."""


class AnalyticsJobs:
    def __init__(
        self,
        db: Database,
        storage: BlobStorage,
        jobs: JobService,
        analytics: AnalyticsService,
        notifications: Notifications,
    ) -> None:
        self._db = db
        self._storage = storage
        self._jobs = jobs
        self._analytics = analytics
        self._quota = analytics.quota
        # This server as the jobs' `worker_id`: it holds their leases and hears their cancels.
        self.runner_id = f"server-{secrets.token_hex(6)}"
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._listening = contextlib.ExitStack()
        self._listening.enter_context(notifications.on_cancel(self.runner_id, self._cancel))

    async def submit(
        self,
        principal: Principal,
        project_id: str,
        name: str,
        params: dict[str, Any],
        render: RenderResult,
        keyed: KeyedStore[JobRecord] | None = None,
        *,
        validate_only: bool = False,
    ) -> JobRecord:
        """Check the call as analytics.execute does, create the job RUNNING and
        start it; with `validate_only`, the job as it would be (empty id)."""
        if not project_id:
            raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")
        principal.require_project(project_id)
        call = await self._analytics.prepare(principal, name, params)
        # Stored as the job's input (JSON): no infinity or NaN, and no larger than any job's.
        require_finite_json(params, "params")
        require_input_size(params)
        for other in sorted(call.projects - {project_id}):
            raise invalid_argument(
                "SOURCE_IN_OTHER_PROJECT",
                f"the params name items of project {other!r}, not {project_id!r}",
                field="params",
            )
        async with keyed_transaction(self._db, keyed, project_id, rollback=validate_only) as tx:
            job = await self._jobs.start_server_run(
                tx, principal, project_id=project_id, job_type_id=ANALYTICS_JOB_TYPE_ID,
                input_params={"operation": call.name, "params": params}, source_item_ids=list(call.items),
                runner_id=self.runner_id,
            )  # fmt: skip
            if keyed is not None and not validate_only:
                await keyed.finish(tx, job)
        if validate_only:
            return replace(job, id="")
        task = asyncio.create_task(self._run(principal, call, job, render), name=f"analytics-job-{job.id}")
        self._runs[job.id] = task
        task.add_done_callback(lambda _: self._runs.pop(job.id, None))
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_leases(), name="analytics-job-leases")
        return job

    async def close(self) -> None:
        """Stop the runs of this server (their jobs fail SERVER_STOPPED)."""
        self._listening.close()
        tasks = [*self._runs.values(), *([self._renewer] if self._renewer else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _cancel(self, job_id: str) -> None:
        """A cancel of one of our jobs (already CANCELLED in the database): stop its run."""
        task = self._runs.get(job_id)
        if task is not None:
            self._cancelled.add(job_id)
            task.cancel()

    async def _renew_leases(self) -> None:
        """While runs last, renew their leases as a worker's heartbeat does."""
        while self._runs:
            await asyncio.sleep(self._jobs.policy.heartbeat_seconds)
            try:
                await self._jobs.renew_server_runs(self.runner_id, list(self._runs))
            except Exception:
                log.exception("could not renew the leases of analytics jobs")

    async def _run(self, principal: Principal, call: PreparedCall, job: JobRecord, render: RenderResult) -> None:
        try:
            result, artifacts, workdir = await self._analytics.run(call)
            try:
                await self._store(principal, call, job, result, artifacts, workdir, render)
            finally:
                self._analytics.remove_later(workdir)
        except _JobAlreadyEnded:
            return
        except asyncio.CancelledError:
            if job.id in self._cancelled:  # the job was cancelled: it is CANCELLED already
                self._cancelled.discard(job.id)
                return
            await asyncio.shield(self._fail(job, Code.UNAVAILABLE, "SERVER_STOPPED", "the server stopped"))
            raise
        except DomainError as error:
            await self._fail(job, error.code, error.reason, error.message)
        except Exception:
            log.exception("analytics job %s failed", job.id)
            await self._fail(job, Code.INTERNAL, "ANALYTICS_FAILED", "the analytics method failed")

    async def _fail(self, job: JobRecord, code: Code, reason: str, message: str) -> None:
        try:
            async with self._db.transaction() as tx:
                await self._jobs.finish_server_run(tx, job.id, error=JobError(int(code), reason, message))
        except Exception:
            log.exception("could not record the failure of analytics job %s", job.id)

    async def _store(
        self,
        principal: Principal,
        call: PreparedCall,
        job: JobRecord,
        result: dict[str, Any],
        artifacts: list[Artifact],
        workdir: Any,
        render: RenderResult,
    ) -> None:
        """The method's files, then the JSON result naming them, stored with the
        job's success in one transaction."""
        project_id = job.project_id
        pending = PendingObjects(self._storage)
        try:
            rows = await asyncio.to_thread(move_artifacts, pending, project_id, artifacts)
            files = [StoredArtifact(aid, a.key, a.media_type, size, sha, a.title) for aid, _, size, sha, a in rows]
            body = render(AnalyticsOutcome(call.name, result, files))

            def write_result() -> Artifact:
                workdir.mkdir(parents=True, exist_ok=True)
                path = workdir / "result.json"
                path.write_bytes(body)
                return Artifact(RESULT_KEY, path, "application/json", f"{call.name} result")

            result_file = await asyncio.to_thread(write_result)
            result_rows = await asyncio.to_thread(move_artifacts, pending, project_id, [result_file])
            async with self._db.transaction(pending.probe) as tx:
                stored = await insert_artifacts(tx, result_rows + rows, project_id, call.name, principal.id, job.id)
                await self._quota.check(tx, project_id)
                finished = await self._jobs.finish_server_run(
                    tx, job.id, artifacts=[dataclasses.asdict(a) for a in stored]
                )
                if finished is None:
                    raise _JobAlreadyEnded()
        except BaseException as error:
            await pending.settle(error)
            raise
