"""The query of `GET /v1/projects/{project_id}/jobs/events` (WatchJobs over
server-sent events) as the set of jobs it follows."""

from __future__ import annotations

from aiohttp import web

from geopera_kernel.server.domain.jobs.watch_set import JobSet
from geopera_kernel.server.errors import invalid_argument
from geopera_kernel.server.rest.query_numbers import int64

MAX_RESUME_PAIRS = 5000


def resume_pairs(raw: str) -> dict[str, int]:
    """`job_a:3,job_b:7` (the `id`s of the last events received, one per job)
    as {job id: after sequence}."""
    pairs: dict[str, int] = {}
    for part in filter(None, raw.split(",")):
        job_id, sep, text = part.strip().rpartition(":")
        sequence = int64(text)
        if not sep or not job_id or sequence is None:
            raise invalid_argument(
                "INVALID_SEQUENCE",
                "after_sequences must be job_id:sequence pairs separated by commas",
                field="after_sequences",
            )
        pairs[job_id] = max(pairs.get(job_id, 0), sequence)
        if len(pairs) > MAX_RESUME_PAIRS:
            raise invalid_argument("INVALID_SEQUENCE", "too many after_sequences pairs", field="after_sequences")
    return pairs


def job_set_of(request: web.Request) -> JobSet:
    """Query `batch_id`, `status` (a JobStatus name without its prefix, e.g.
    `RUNNING`), `job_type_id`, `after_sequences`; the header `Last-Event-ID`
    (one `job_id:sequence`) adds to `after_sequences`."""
    query = request.query
    after = resume_pairs(query.get("after_sequences", ""))
    for job_id, sequence in resume_pairs(request.headers.get("Last-Event-ID", "")).items():
        after[job_id] = max(after.get(job_id, 0), sequence)
    status = query.get("status", "").upper().removeprefix("JOB_STATUS_") or None
    return JobSet(
        project_id=request.match_info["project_id"],
        batch_id=query.get("batch_id", ""),
        status=status,
        job_type_id=query.get("job_type_id") or None,
        after_sequences=after,
    )
