"""Jobs the server runs itself (analytics.submit): created RUNNING in the
caller's transaction, with no credits held, and finished by the server with
the artifacts they stored. They use the same rows, events and reads as
worker jobs, so `processing.jobs.get`, `WatchJob` and cancel work on them
unchanged. The running server is their `worker_id` (its runner id) and holds
a lease it renews: if that server dies, lease expiry fails the job (one
attempt: ATTEMPTS_EXHAUSTED), and a cancel reaches the runner as a worker's."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from geopera_kernel.raster.tracing import current_traceparent
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.jobs.records import JobError, JobRecord
from geopera_kernel.server.domain.jobs.transitions import JobTransitions
from geopera_kernel.server.ids import new_id
from geopera_kernel.server.store import Q

# The built-in job type of analytics.submit; only the server creates jobs of it.
ANALYTICS_JOB_TYPE_ID = "analytics"


class ServerRuns(JobTransitions):
    async def start_server_run(
        self,
        tx: psycopg.AsyncConnection[Any],
        principal: Principal,
        *,
        project_id: str,
        job_type_id: str,
        input_params: dict[str, Any],
        source_item_ids: list[str],
        runner_id: str,
    ) -> JobRecord:
        """A job created and started at once (events `created`, `running`), holding 0 credits:
        one attempt, since a server-side run has no lease to lose."""
        row = await (
            await tx.execute(
                Q.insert_job,
                {
                    "id": new_id("job"),
                    "project_id": project_id,
                    "job_type_id": job_type_id,
                    "input_params": Jsonb(input_params),
                    "target_collection_id": job_type_id,
                    "source_item_ids": source_item_ids,
                    "credits_reserved": 0,
                    "created_by": principal.id,
                    "max_attempts": 1,
                    "message": "created; 0 credits reserved (analytics cost no credits)",
                    "resubmitted_from": None,
                    "batch_id": None,
                    "traceparent": current_traceparent(),
                },
            )
        ).fetchone()
        assert row is not None
        created = JobRecord.from_row(row)
        started_row = await (
            await tx.execute(
                Q.start_server_job,
                {
                    "id": created.id,
                    "message": "running on the server",
                    "worker_id": runner_id,
                    "lease_seconds": self.policy.lease_seconds,
                },
            )
        ).fetchone()
        assert started_row is not None
        started = JobRecord.from_row(started_row)
        await self._record_events(tx, [(created, "created"), (started, "running")])
        return started

    async def renew_server_runs(self, runner_id: str, job_ids: list[str]) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                Q.renew_leases,
                {"worker_id": runner_id, "job_ids": job_ids, "lease_seconds": self.policy.lease_seconds},
            )

    async def finish_server_run(
        self,
        tx: psycopg.AsyncConnection[Any],
        job_id: str,
        *,
        artifacts: list[dict[str, Any]] | None = None,
        error: JobError | None = None,
    ) -> JobRecord | None:
        """SUCCEEDED with `artifacts`, or FAILED with `error`; None when the job
        already ended (cancelled meanwhile): the caller then drops its files."""
        locked = await (await tx.execute(Q.lock_job, {"id": job_id})).fetchone()
        if locked is None or JobRecord.from_row(locked).terminal:
            return None
        job = JobRecord.from_row(locked)
        if error is not None:
            return await self._finish_and_release(tx, job, "FAILED", error=error, message=error.message)
        await tx.execute(Q.store_job_artifacts, {"id": job_id, "output_artifacts": Jsonb(artifacts or [])})
        return await self._finish(tx, job, "SUCCEEDED", message=f"{len(artifacts or [])} artifact(s) stored")
