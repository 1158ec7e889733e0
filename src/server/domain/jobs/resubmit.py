"""Resubmitting a finished job: a new job with the original's type, target
and input (overrides merged over it), priced anew and dispatched, linked to
the original by `resubmitted_from`."""

from __future__ import annotations

from typing import Any

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.call_commit import PLAIN_COMMIT, CallCommit
from geopera_kernel.server.domain.jobs.creation import JobCreation
from geopera_kernel.server.domain.jobs.records import JobCreate, JobSpend
from geopera_kernel.server.errors import failed_precondition


def merged_input(original: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396 at the top level: a key replaces the original's, null removes it."""
    merged = dict(original)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class JobResubmits(JobCreation):
    async def resubmit(
        self,
        principal: Principal,
        job_id: str,
        overrides: dict[str, Any],
        *,
        commit: CallCommit[JobSpend] = PLAIN_COMMIT,
    ) -> JobSpend:
        """Only a finished job: re-running one still live would be a second
        run of the same work, rarely what a retried click means."""
        original = await self._read_job(principal, job_id)
        if not original.terminal:
            raise failed_precondition(
                "JOB_NOT_FINISHED",
                f"job {job_id} is {original.status}; only a finished job can be resubmitted (cancel it first)",
                status=original.status,
            )
        spec = JobCreate(
            project_id=original.project_id,
            job_type_id=original.job_type_id,
            input_params=merged_input(original.input_params, overrides),
            target_collection_id=original.target_collection_id,
            resubmitted_from=original.id,
        )
        return await self.create(principal, spec, dispatch=True, commit=commit)
