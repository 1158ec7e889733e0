"""Reading jobs: one job, a page of a project's jobs, a job's events."""

from __future__ import annotations

import builtins  # JobReads.list shadows the builtin in the annotations after it

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.jobs.records import JobEvent, JobQuery, JobRecord
from geopera_kernel.server.domain.jobs.transitions import JobTransitions
from geopera_kernel.server.errors import invalid_argument
from geopera_kernel.server.pagination import decode_page_token, encode_page_token, page_size_or_default
from geopera_kernel.server.store import Q


class JobReads(JobTransitions):
    async def get(self, principal: Principal, job_id: str) -> JobRecord:
        return await self._read_job(principal, job_id)

    async def list(self, principal: Principal, query: JobQuery) -> tuple[builtins.list[JobRecord], str]:
        if not query.project_id:
            raise invalid_argument("PROJECT_ID_REQUIRED", "project_id is required", field="project_id")
        principal.require_project(query.project_id)
        limit = page_size_or_default(query.page_size)
        if query.create_start and query.create_end and query.create_start >= query.create_end:
            raise invalid_argument(
                "INVALID_TIME_RANGE", "create_time_start must be before create_time_end", field="create_time_end"
            )
        filters = {
            "op": "processing.jobs.list",
            "project_id": query.project_id,
            "status": query.status,
            "job_type_id": query.job_type_id,
            "start": query.create_start.isoformat() if query.create_start else None,
            "end": query.create_end.isoformat() if query.create_end else None,
        }
        cursor = decode_page_token(query.page_token, filters)
        async with self._db.connection() as conn:
            rows = await (
                await conn.execute(
                    Q.list_jobs,
                    {
                        "project_id": query.project_id,
                        "status": query.status,
                        "job_type_id": query.job_type_id,
                        "create_start": query.create_start,
                        "create_end": query.create_end,
                        "before_time": cursor["create_time"] if cursor else None,
                        "before_id": cursor["id"] if cursor else None,
                        "limit": limit + 1,
                    },
                )
            ).fetchall()
        jobs = [JobRecord.from_row(r) for r in rows[:limit]]
        next_token = ""
        if len(rows) > limit:
            last = jobs[-1]
            next_token = encode_page_token({"create_time": last.create_time.isoformat(), "id": last.id}, filters)
        return jobs, next_token

    async def events_after(self, job_id: str, after: int) -> builtins.list[JobEvent]:
        async with self._db.connection() as conn:
            rows = await (await conn.execute(Q.events_after, {"job_id": job_id, "after": after})).fetchall()
        # Snapshots leave out input_params (stored once, on the job).
        return [
            JobEvent(
                r["sequence"],
                r["event_type"],
                r["event_time"],
                JobRecord.from_json({**r["snapshot"], "input_params": r["input_params"]}),
            )
            for r in rows
        ]
