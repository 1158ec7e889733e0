"""Reading jobs: one job, a page of a project's jobs, a job's events, and
the sets WatchJobs follows with their events."""

from __future__ import annotations

import builtins  # JobReads.list shadows the builtin in the annotations after it
from typing import Any

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.jobs.records import JobEvent, JobQuery, JobRecord
from geopera_kernel.server.domain.jobs.transitions import JobTransitions
from geopera_kernel.server.errors import Code, DomainError, invalid_argument, not_found
from geopera_kernel.server.pagination import decode_page_token, page, page_size_or_default
from geopera_kernel.server.store import Q

EVENTS_READ_LIMIT = 5000  # events_after_many's LIMIT


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
        return page(
            rows, limit, JobRecord.from_row, lambda last: {"create_time": last.create_time.isoformat(), "id": last.id},
            filters,
        )  # fmt: skip

    async def events_after(self, job_id: str, after: int) -> builtins.list[JobEvent]:
        async with self._db.connection() as conn:
            rows = await (await conn.execute(Q.events_after, {"job_id": job_id, "after": after})).fetchall()
        return [_event(r) for r in rows]

    async def watch_set(
        self,
        principal: Principal,
        *,
        project_id: str,
        batch_id: str,
        status: str | None,
        job_type_id: str | None,
        named: builtins.list[str],
        limit: int,
    ) -> builtins.list[JobRecord]:
        """The jobs WatchJobs follows (see kernel.proto): a batch's, or a
        project's unfinished ones matching the filters plus those `named`."""
        async with self._db.connection() as conn:
            if batch_id:
                rows = await (await conn.execute(Q.batch_jobs, {"batch_id": batch_id})).fetchall()
                if not rows:
                    raise not_found("BATCH_NOT_FOUND", f"batch {batch_id!r} does not exist", batch_id=batch_id)
                principal.require_project(rows[0]["project_id"])
                if project_id and rows[0]["project_id"] != project_id:
                    raise not_found("BATCH_NOT_FOUND", f"project {project_id!r} has no batch {batch_id!r}")
            else:
                principal.require_project(project_id)
                params = {"project_id": project_id, "status": status, "job_type_id": job_type_id, "limit": limit + 1}
                rows = await (await conn.execute(Q.unfinished_project_jobs, params)).fetchall()
                found = {r["id"] for r in rows}
                extra = [i for i in named if i not in found]
                if extra:
                    more = await (await conn.execute(Q.get_jobs, {"ids": extra})).fetchall()
                    rows += [r for r in more if r["project_id"] == project_id]
        if len(rows) > limit:
            raise DomainError(
                Code.RESOURCE_EXHAUSTED,
                "TOO_MANY_JOBS",
                f"the watch would follow more than {limit} jobs; narrow it (status, job_type_id, a batch)",
                metadata={"max_jobs": str(limit)},
            )
        return [JobRecord.from_row(r) for r in rows]

    async def jobs_by_id(self, job_ids: builtins.list[str]) -> dict[str, JobRecord]:
        async with self._db.connection() as conn:
            rows = await (await conn.execute(Q.get_jobs, {"ids": job_ids})).fetchall()
        return {r["id"]: JobRecord.from_row(r) for r in rows}

    async def events_after_many(self, afters: dict[str, int]) -> tuple[builtins.list[JobEvent], bool]:
        """Several jobs' events, each after its own sequence, in (job, sequence)
        order; True when the read was cut at its limit (read again)."""
        params = {"job_ids": builtins.list(afters), "afters": builtins.list(afters.values())}
        async with self._db.connection() as conn:
            rows = await (await conn.execute(Q.events_after_many, params)).fetchall()
        events = [_event(r) for r in rows]
        return events, len(rows) >= EVENTS_READ_LIMIT


def _event(row: dict[str, Any]) -> JobEvent:
    # Snapshots leave out input_params (stored once, on the job).
    snapshot = {**row["snapshot"], "input_params": row["input_params"]}
    return JobEvent(row["sequence"], row["event_type"], row["event_time"], JobRecord.from_json(snapshot))
