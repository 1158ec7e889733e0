"""Job state changes, and the base every part of the job service builds on.

Every state change of a job bumps its `sequence`, writes a `job_events` row
with the new snapshot, and NOTIFYs `geopera_job_events` - all in the same
transaction, so watchers on any replica see every change exactly once and in
order, and a rolled-back change is never announced. A job's credits move in
the same transaction as its state (see CreditService), last before commit.
"""

from __future__ import annotations

import builtins  # `list` is shadowed in JobService, which inherits these annotations
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from geopera_kernel.server import metrics
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.credits import CreditService
from geopera_kernel.server.domain.jobs.job_types import JobTypes
from geopera_kernel.server.domain.jobs.notices import CANCEL_CHANNEL, encode_cancel, notify
from geopera_kernel.server.domain.jobs.policy import LeasePolicy
from geopera_kernel.server.domain.jobs.records import JobError, JobRecord, event_snapshot
from geopera_kernel.server.errors import Code, failed_precondition, invalid_argument, not_found
from geopera_kernel.server.store import Database, Q
from geopera_kernel.server.store.database import after_commit


class JobTransitions:
    def __init__(self, db: Database, policy: LeasePolicy | None = None, credits: CreditService | None = None) -> None:
        self._db = db
        self.policy = policy or LeasePolicy()
        self.credits = credits or CreditService(db)
        self.types = JobTypes(db, self.policy)

    async def _read_job(self, principal: Principal, job_id: str) -> JobRecord:
        async with self._db.connection() as conn:
            return await _visible_job(conn, Q.get_job, principal, job_id)

    async def _lock_job(self, tx: psycopg.AsyncConnection[Any], principal: Principal, job_id: str) -> JobRecord:
        """The job, locked until `tx` ends."""
        return await _visible_job(tx, Q.lock_job, principal, job_id)

    # -- events --------------------------------------------------------------

    async def _record_event(self, tx: psycopg.AsyncConnection[Any], job: JobRecord, event_type: str) -> JobRecord:
        """Persist the event and NOTIFY it (one statement; see insert_events)."""
        await self._record_events(tx, [(job, event_type)])
        return job

    async def _record_events(
        self, tx: psycopg.AsyncConnection[Any], events: builtins.list[tuple[JobRecord, str]]
    ) -> None:
        """Persist and NOTIFY several events, in order, in one statement."""
        if not events:
            return
        await tx.execute(
            Q.insert_events,
            {
                "job_ids": [job.id for job, _ in events],
                "sequences": [job.sequence for job, _ in events],
                "event_types": [event_type for _, event_type in events],
                "snapshots": [Jsonb(event_snapshot(job)) for job, _ in events],
                "terminals": [job.terminal for job, _ in events],
                "worker_ids": [job.worker_id for job, _ in events],
            },
        )

    # -- endings ---------------------------------------------------------------

    async def _finish(
        self,
        tx: psycopg.AsyncConnection[Any],
        job: JobRecord,
        status: str,
        *,
        error: JobError | None = None,
        message: str = "",
        charged: int = 0,
        output_item_ids: builtins.list[str] | None = None,
    ) -> JobRecord:
        """Terminal transition: the job row and its event. The credits are
        settled by the caller's last statement before commit."""
        row = await (
            await tx.execute(
                Q.finish_job,
                {
                    "id": job.id,
                    "status": status,
                    "error": Jsonb(error.__dict__) if error else None,
                    "message": message,
                    "credits_charged": charged,
                    "output_item_ids": output_item_ids or [],
                },
            )
        ).fetchone()
        assert row is not None, f"job {job.id} finished twice"
        return await self._record_event(tx, JobRecord.from_row(row), status.lower())

    async def _finish_and_release(
        self, tx: psycopg.AsyncConnection[Any], job: JobRecord, status: str, *, error: JobError, message: str
    ) -> JobRecord:
        """A job ended without success: finished, and its whole hold released."""
        finished = await self._finish(tx, job, status, error=error, message=message)
        await self.credits.release(tx, job.project_id, job.id, held=job.credits_reserved, note=f"job {status.lower()}")
        return finished

    async def succeed(
        self, tx: psycopg.AsyncConnection[Any], job: JobRecord, *, actual_cost: int, output_item_ids: builtins.list[str]
    ) -> JobRecord:
        """Mark the job SUCCEEDED (its row and event); the caller then runs
        `settle_success`, last before its commit. The hold is the price quoted
        at creation and the most a job costs: below it the rest is released;
        above it the hold is captured and the excess is waived, recorded as a
        `waive` ledger entry and in the job's message, never dropped silently."""
        charged = min(actual_cost, job.credits_reserved)
        waived = actual_cost - charged
        message = f"{len(output_item_ids)} output item(s) registered"
        if waived:
            message += f"; actual cost {actual_cost} credits exceeds the {charged} reserved: {waived} waived"
        return await self._finish(
            tx, job, "SUCCEEDED", message=message, charged=charged, output_item_ids=output_item_ids
        )

    async def settle_success(self, tx: psycopg.AsyncConnection[Any], job: JobRecord, *, actual_cost: int) -> None:
        """The credits of a job `succeed` finished (see CreditService.capture).
        Run it last in the transaction: it locks the project's credit account row."""
        await self.credits.capture(tx, job.project_id, job.id, held=job.credits_reserved, actual_cost=actual_cost)

    async def cancel(self, principal: Principal, job_id: str, reason: str, *, validate_only: bool = False) -> JobRecord:
        """With `validate_only`, run and rolled back: the job as cancelling would leave it."""
        async with self._db.transaction(rollback=validate_only) as tx:
            job = await self._lock_job(tx, principal, job_id)
            if job.status == "CANCELLED":
                return job
            if job.terminal:
                raise failed_precondition("JOB_ALREADY_FINISHED", f"job {job_id} already {job.status}")
            message = f"cancelled: {reason}" if reason else "cancelled"
            error = JobError(int(Code.CANCELLED), "JOB_CANCELLED", message)
            if job.worker_id:  # delivered at commit, like the event
                await notify(tx, CANCEL_CHANNEL, encode_cancel(job.worker_id, job.id))
            cancelled = await self._finish_and_release(tx, job, "CANCELLED", error=error, message=message)
        return cancelled

    # -- retries ---------------------------------------------------------------

    async def _requeue_or_fail(
        self, tx: psycopg.AsyncConnection[Any], job: JobRecord, why: str, *, count_attempt: bool = True
    ) -> JobRecord:
        if count_attempt and job.attempt >= job.max_attempts:
            error = JobError(int(Code.ABORTED), "ATTEMPTS_EXHAUSTED", f"{why}; gave up after {job.attempt} attempts")
            return await self._finish_and_release(tx, job, "FAILED", error=error, message=error.message)
        backoff = self.policy.retry_backoff.delay(job.attempt) if count_attempt else 0.0
        row = await (
            await tx.execute(
                Q.requeue_job,
                {
                    "id": job.id,
                    "backoff_seconds": backoff,
                    "refund_attempt": 0 if count_attempt else 1,
                    "message": f"{why}; retrying in {backoff:.1f} s" if count_attempt else why,
                },
            )
        ).fetchone()
        assert row is not None
        after_commit(tx, metrics.JOB_RETRIES.labels(job.job_type_id).inc)
        return await self._record_event(tx, JobRecord.from_row(row), "retrying")

    async def expire_leases(self) -> int:
        """Re-dispatch (or fail) jobs whose worker stopped heartbeating. Safe on
        every replica at once (SKIP LOCKED)."""
        async with self._db.transaction() as tx:
            rows = await (await tx.execute(Q.expired_leases)).fetchall()
            for row in rows:
                locked = await (await tx.execute(Q.lock_job, {"id": row["id"]})).fetchone()
                assert locked is not None
                job = JobRecord.from_row(locked)
                await self._requeue_or_fail(tx, job, f"worker {job.worker_id} lost its lease")
        metrics.LEASES_EXPIRED.inc(len(rows))
        return len(rows)


async def _visible_job(conn: psycopg.AsyncConnection[Any], query: str, principal: Principal, job_id: str) -> JobRecord:
    """The job `query` reads, if the caller may see it."""
    if not job_id:
        raise invalid_argument("JOB_ID_REQUIRED", "job_id is required", field="job_id")
    row = await (await conn.execute(query, {"id": job_id})).fetchone()
    if row is None:
        raise not_found("JOB_NOT_FOUND", f"job {job_id!r} does not exist", job_id=job_id)
    principal.require_project(row["project_id"])
    return JobRecord.from_row(row)
