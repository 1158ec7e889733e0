"""JobService: the job service, one class over its parts (each in its module).

- transitions: state changes with their events and credits, cancel, lease expiry
- creation: create (with its credit reservation) and dispatch
- resubmit, batches: a finished job run again; many jobs created at once
- reads: get, list, events
- attempts: the job-token calls of the worker holding an attempt
- logs: the job's log records (appended with the job token, read by users)
- workers: worker sessions, heartbeats, claims
- job_types: the job type table and its cache
"""

from __future__ import annotations

import builtins  # JobReads.list shadows the builtin in the annotations after it
from typing import Any

import psycopg

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.jobs.attempts import JobAttempts
from geopera_kernel.server.domain.jobs.batches import JobBatches
from geopera_kernel.server.domain.jobs.job_types import JobTypeRecord
from geopera_kernel.server.domain.jobs.logs import JobLogs
from geopera_kernel.server.domain.jobs.reads import JobReads
from geopera_kernel.server.domain.jobs.resubmit import JobResubmits
from geopera_kernel.server.domain.jobs.workers import WorkerClaims


class JobService(JobResubmits, JobBatches, JobReads, JobLogs, JobAttempts, WorkerClaims):
    # -- job types (see JobTypes) ----------------------------------------------

    async def upsert_job_type(self, record: JobTypeRecord, owner_token_id: str | None = None) -> JobTypeRecord:
        return await self.types.upsert(record, owner_token_id)

    async def declare_job_types(self, principal: Principal, declared: builtins.list[JobTypeRecord]) -> None:
        await self.types.declare(principal, declared)

    async def job_types(self) -> builtins.list[JobTypeRecord]:
        return await self.types.all()

    async def job_type(self, job_type_id: str, conn: psycopg.AsyncConnection[Any] | None = None) -> JobTypeRecord:
        """A job type, from a short-lived cache: types change only when a
        worker declares a new schema, and `connected_workers` is advisory."""
        return await self.types.get(job_type_id, conn)
