"""The calls a worker makes with a job token, for the one attempt it holds:
progress, failure, hand-back, and the transaction its outputs commit in."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.jobs.records import JobError, JobRecord
from geopera_kernel.server.domain.jobs.transitions import JobTransitions
from geopera_kernel.server.errors import Code, DomainError, failed_precondition, permission_denied
from geopera_kernel.server.store import CommitProbe, Q


class JobAttempts(JobTransitions):
    async def _current_attempt(self, tx: psycopg.AsyncConnection[Any], principal: Principal, job_id: str) -> JobRecord:
        """Lock the job and check the token's attempt is the live one."""
        require_job_token(principal, job_id)
        row = await (await tx.execute(Q.lock_job, {"id": job_id})).fetchone()
        assert row is not None  # the token references it
        job = JobRecord.from_row(row)
        if job.attempt != principal.attempt or job.worker_id != principal.name or job.terminal:
            raise failed_precondition(
                "JOB_ATTEMPT_OVER",
                f"attempt {principal.attempt} of job {job_id} is over (job is {job.status}, attempt {job.attempt})",
            )
        return job

    async def report_progress(self, principal: Principal, job_id: str, progress: float, message: str) -> bool:
        """Returns True when the job was cancelled (the worker should stop)."""
        progress = 0.0 if math.isnan(progress) else min(1.0, max(0.0, progress))
        try:
            require_job_token(principal, job_id)
            params = {
                "id": job_id,
                "attempt": principal.attempt,
                "worker_id": principal.name,
                "progress": progress,
                "message": message[:500],
                "lease_seconds": self.policy.lease_seconds,
            }
            # One statement (the update, its event and NOTIFY): atomic without a transaction.
            async with self._db.connection() as conn:
                row = await (await conn.execute(Q.report_progress, params)).fetchone()
            if row is None:
                async with self._db.transaction() as tx:
                    # The attempt is over: the lock and check say how (JOB_ATTEMPT_OVER).
                    await self._current_attempt(tx, principal, job_id)
        except DomainError as err:
            if err.reason == "JOB_ATTEMPT_OVER" and await self._cancelled(job_id):
                return True
            raise
        return False

    async def _cancelled(self, job_id: str) -> bool:
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_job, {"id": job_id})).fetchone()
        return row is not None and row["status"] == "CANCELLED"

    async def report_failure(
        self, principal: Principal, job_id: str, reason: str, message: str, retryable: bool
    ) -> JobRecord:
        async with self._db.transaction() as tx:
            job = await self._current_attempt(tx, principal, job_id)
            reason = reason if reason and reason.replace("_", "").isalnum() and reason.isupper() else "JOB_FAILED"
            if retryable:
                return await self._requeue_or_fail(tx, job, f"attempt {job.attempt} failed: {message[:300]}")
            error = JobError(int(Code.ABORTED), reason, message[:1000] or "the job failed")
            return await self._finish_and_release(tx, job, "FAILED", error=error, message=error.message)

    async def release(self, principal: Principal, job_id: str, reason: str) -> JobRecord:
        async with self._db.transaction() as tx:
            job = await self._current_attempt(tx, principal, job_id)
            return await self._requeue_or_fail(
                tx,
                job,
                f"handed back by worker {job.worker_id}: {reason[:200] or 'shutting down'}",
                count_attempt=False,
            )

    @asynccontextmanager
    async def committing_outputs(
        self, principal: Principal, job_id: str, probe: CommitProbe | None = None
    ) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], JobRecord]]:
        """The transaction RegisterOutputs commits in: the job locked and
        checked to be the token's live attempt."""
        async with self._db.transaction(probe) as tx:
            job = await self._current_attempt(tx, principal, job_id)
            yield tx, job

    async def fail_attempt(self, principal: Principal, job_id: str, error: JobError) -> JobRecord | None:
        """End the job FAILED with `error`, no retry (its outputs were refused for
        good); None when the token's attempt is over already."""
        try:
            async with self._db.transaction() as tx:
                job = await self._current_attempt(tx, principal, job_id)
                return await self._finish_and_release(tx, job, "FAILED", error=error, message=error.message)
        except DomainError as err:
            if err.reason == "JOB_ATTEMPT_OVER":
                return None
            raise

    async def succeed_with_artifacts(
        self, tx: psycopg.AsyncConnection[Any], job: JobRecord, artifacts: list[dict[str, Any]]
    ) -> JobRecord:
        """An analytics job's success in the RegisterOutputs transaction: the artifacts it
        stored, no items; the caller then runs `settle_success` (0 credits) last."""
        await tx.execute(Q.store_job_artifacts, {"id": job.id, "output_artifacts": Jsonb(artifacts)})
        return await self._finish(tx, job, "SUCCEEDED", message=f"{len(artifacts)} artifact(s) stored")

    async def store_response(self, tx: psycopg.AsyncConnection[Any], job_id: str, response: bytes) -> None:
        await tx.execute(Q.store_outputs_response, {"id": job_id, "response": response})

    async def outputs_state(self, principal: Principal, job_id: str) -> tuple[JobRecord, bytes | None]:
        """Before receiving outputs: the job, and the stored response when this
        token's attempt already committed (a retry); fails fast when the
        attempt is over otherwise."""
        require_job_token(principal, job_id)
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_job, {"id": job_id})).fetchone()
        assert row is not None  # the token references it
        job = JobRecord.from_row(row)
        if job.status == "SUCCEEDED" and job.attempt == principal.attempt and row["outputs_response"] is not None:
            return job, bytes(row["outputs_response"])
        if job.attempt != principal.attempt or job.worker_id != principal.name or job.terminal:
            raise failed_precondition(
                "JOB_ATTEMPT_OVER",
                f"attempt {principal.attempt} of job {job_id} is over (job is {job.status}, attempt {job.attempt})",
            )
        return job, None


def require_job_token(principal: Principal, job_id: str) -> None:
    if principal.kind != "job":
        raise permission_denied("JOB_TOKEN_REQUIRED", "this call takes the job token of an assignment")
    if principal.job_id != job_id:
        raise permission_denied(
            "JOB_TOKEN_MISMATCH", f"this job token belongs to job {principal.job_id}, not {job_id!r}"
        )
