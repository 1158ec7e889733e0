"""Workers: their sessions and heartbeats, and the claims that hand them
queued jobs, each with a fresh job token and a lease."""

from __future__ import annotations

import builtins  # JobService.list shadows the builtin in the annotations after it
import secrets

from geopera_kernel.server.auth import JOB_TOKEN_PREFIX, Principal, hash_token
from geopera_kernel.server.domain.jobs.notices import DISPATCH_CHANNEL, notify
from geopera_kernel.server.domain.jobs.records import Assignment, JobRecord, WorkerRecord
from geopera_kernel.server.domain.jobs.transitions import JobTransitions
from geopera_kernel.server.domain.models import ItemRecord
from geopera_kernel.server.domain.names import WORKER_ID
from geopera_kernel.server.errors import invalid_argument, permission_denied
from geopera_kernel.server.ids import new_id
from geopera_kernel.server.store import Q

MAX_WORKER_NAME_CHARS = 200


class WorkerClaims(JobTransitions):
    async def register_worker(
        self, principal: Principal, worker_id: str, name: str, job_type_ids: builtins.list[str], capacity: int
    ) -> WorkerRecord:
        """A new session of a worker; resuming `worker_id` supersedes its
        earlier session (whose cleanup then leaves this one alone)."""
        if worker_id and not WORKER_ID.matches(worker_id):
            raise invalid_argument(
                "INVALID_WORKER_ID",
                f"worker_id must be {WORKER_ID.shape}, or empty for a new worker",
                field="hello.worker_id",
            )
        if len(name) > MAX_WORKER_NAME_CHARS:
            raise invalid_argument(
                "INVALID_WORKER_NAME", f"name is at most {MAX_WORKER_NAME_CHARS} characters", field="hello.name"
            )
        session_id = new_id("ws")
        async with self._db.transaction() as tx:
            row = await (
                await tx.execute(
                    Q.insert_worker,
                    {
                        "id": worker_id or new_id("wk"),
                        "token_id": principal.id,
                        "name": name,
                        "job_type_ids": job_type_ids,
                        "capacity": capacity,
                        "session_id": session_id,
                    },
                )
            ).fetchone()
            if row is None:
                raise permission_denied("WORKER_ID_TAKEN", f"worker id {worker_id!r} belongs to another credential")
            for job_type_id in job_type_ids:
                await notify(tx, DISPATCH_CHANNEL, job_type_id)
        return WorkerRecord(
            row["id"], row["name"], row["job_type_ids"], row["capacity"], 0, True,
            row["last_heartbeat_time"], row["connect_time"], session_id,
        )  # fmt: skip

    async def heartbeat(self, worker_id: str, active_job_ids: builtins.list[str], session_id: str) -> bool:
        """Renews the worker's leases; False when a newer session of the
        worker took over (this one should end)."""
        async with self._db.connection() as conn:
            session = {"id": worker_id, "session_id": session_id}
            current = await (await conn.execute(Q.worker_heartbeat, session)).fetchone()
            if active_job_ids:
                await conn.execute(
                    Q.renew_leases,
                    {"worker_id": worker_id, "job_ids": active_job_ids, "lease_seconds": self.policy.lease_seconds},
                )
        return current is not None

    async def worker_disconnected(self, worker_id: str, session_id: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute(Q.worker_disconnected, {"id": worker_id, "session_id": session_id})

    async def workers(self, include_disconnected: bool) -> builtins.list[WorkerRecord]:
        """Workers with an open session that heartbeated within the lease
        (all, with `include_disconnected`)."""
        params = {"include_disconnected": include_disconnected, "live_seconds": self.policy.lease_seconds}
        async with self._db.connection() as conn:
            rows = await (await conn.execute(Q.list_workers, params)).fetchall()
        return [
            WorkerRecord(
                r["id"],
                r["name"],
                r["job_type_ids"],
                r["capacity"],
                r["active_jobs"],
                r["live"],
                r["last_heartbeat_time"],
                r["connect_time"],
            )
            for r in rows
        ]

    async def active_jobs(self, worker_ids: builtins.list[str]) -> dict[str, int]:
        if not worker_ids:
            return {}
        async with self._db.connection() as conn:
            rows = await (await conn.execute(Q.active_jobs_by_worker, {"worker_ids": worker_ids})).fetchall()
        return {r["worker_id"]: r["n"] for r in rows}

    async def claim(
        self,
        worker_id: str,
        job_type_ids: builtins.list[str],
        capacity: int,
        *,
        session_id: str,
        project_ids: frozenset[str] | None = None,
    ) -> builtins.list[Assignment]:
        """Hand queued jobs to a worker: each gets a fresh job token bound to
        (job, attempt) and a lease. `project_ids` limits the claim to those
        projects' jobs (a worker credential limited to projects); None claims
        from every project. A superseded session claims nothing."""
        assignments = []
        async with self._db.transaction() as tx:
            rows = await (
                await tx.execute(
                    Q.claim_jobs,
                    {
                        "worker_id": worker_id,
                        "job_type_ids": job_type_ids,
                        "capacity": capacity,
                        "lease_seconds": self.policy.lease_seconds,
                        "session_id": session_id,
                        "project_ids": sorted(project_ids) if project_ids is not None else None,
                    },
                )
            ).fetchall()
            jobs = [JobRecord.from_row(row) for row in rows]
            tokens = [JOB_TOKEN_PREFIX + secrets.token_urlsafe(32) for _ in jobs]
            # One statement each for all the claimed jobs' events and tokens.
            await self._record_events(tx, [(job, "assigned") for job in jobs])
            if jobs:
                await tx.execute(
                    Q.insert_job_tokens,
                    {
                        "token_hashes": [hash_token(token) for token in tokens],
                        "job_ids": [job.id for job in jobs],
                        "attempts": [job.attempt for job in jobs],
                        "worker_id": worker_id,
                    },
                )
            for row, job, token in zip(rows, jobs, tokens, strict=True):
                sources = []
                for item_id in job.source_item_ids:
                    item_row = await (await tx.execute(Q.get_item, {"id": item_id})).fetchone()
                    if item_row is not None:
                        sources.append(ItemRecord.from_row(item_row))
                assert row["lease_expire_time"] is not None
                assignments.append(Assignment(job, token, row["lease_expire_time"], sources, row["traceparent"]))
        return assignments
