"""What the job service reads and writes: jobs, their events, assignments,
workers, and the requests that create and list jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from geopera_kernel.server.domain.jobs.pricing import Estimate
from geopera_kernel.server.domain.models import ItemRecord
from geopera_kernel.server.domain.rows import from_columns

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
ACTIVE = frozenset({"DISPATCHED", "RUNNING"})
STATUSES = ("PENDING", "DISPATCHED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")


@dataclass(frozen=True)
class JobError:
    code: int
    reason: str
    message: str


_TIME_FIELDS = ("create_time", "dispatch_time", "start_time", "end_time", "update_time")


@dataclass(frozen=True)
class JobRecord:
    id: str
    project_id: str
    job_type_id: str
    status: str
    input_params: dict[str, Any]
    target_collection_id: str
    source_item_ids: list[str]
    progress: float
    attempt: int
    max_attempts: int
    worker_id: str
    create_time: datetime
    dispatch_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    update_time: datetime
    credits_reserved: int
    credits_charged: int
    error: JobError | None
    message: str
    cancel_requested: bool
    output_item_ids: list[str]
    sequence: int
    # '' when none; defaulted, for the snapshots stored before they existed.
    resubmitted_from: str = ""
    batch_id: str = ""
    # Artifacts the job stored (analytics jobs): id, key, media_type, size_bytes, sha256, title.
    output_artifacts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRecord:
        error = row["error"]
        return from_columns(
            cls,
            row,
            source_item_ids=list(row["source_item_ids"]),
            progress=float(row["progress"]),
            worker_id=row["worker_id"] or "",
            error=JobError(**error) if error else None,
            output_item_ids=list(row["output_item_ids"]),
            resubmitted_from=row.get("resubmitted_from") or "",
            batch_id=row.get("batch_id") or "",
            output_artifacts=list(row.get("output_artifacts") or []),
        )

    def to_json(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for name in _TIME_FIELDS:
            value = data[name]
            data[name] = value.isoformat() if value is not None else None
        data["error"] = self.error.__dict__ if self.error else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        values = dict(data)
        for name in _TIME_FIELDS:
            value = values[name]
            values[name] = datetime.fromisoformat(value) if value is not None else None
        values["error"] = JobError(**values["error"]) if values["error"] else None
        values.setdefault("output_artifacts", [])  # snapshots from before analytics jobs
        return cls(**values)


def event_snapshot(job: JobRecord) -> dict[str, Any]:
    """A job event's snapshot: the job without its input_params, which never
    change and are stored once, on the job (readers put them back)."""
    snapshot = job.to_json()
    del snapshot["input_params"]
    return snapshot


@dataclass(frozen=True)
class Dispatch:
    accepted: bool
    worker_id: str
    message: str


@dataclass(frozen=True)
class JobSpend:
    """What a spend answers: the job (as it would be, with an empty id, after
    a validate-only call), its dispatch (None when not dispatched), its price."""

    job: JobRecord
    dispatch: Dispatch | None
    estimate: Estimate


@dataclass(frozen=True)
class JobEvent:
    sequence: int
    event_type: str
    event_time: datetime
    job: JobRecord


@dataclass(frozen=True)
class JobCreate:
    project_id: str
    job_type_id: str
    input_params: dict[str, Any]
    target_collection_id: str
    # Set by clip.create_from_item, which has measured the AOI already.
    area_km2: float | None = None
    asset_count: int | None = None
    # Set by processing.jobs.resubmit: the job this one re-runs.
    resubmitted_from: str = ""


@dataclass(frozen=True)
class JobQuery:
    project_id: str
    status: str | None
    job_type_id: str | None
    create_start: datetime | None
    create_end: datetime | None
    page_size: int
    page_token: str


@dataclass(frozen=True)
class Assignment:
    job: JobRecord
    token: str
    lease_expire_time: datetime
    sources: list[ItemRecord]
    # The W3C traceparent of the call that created the job ('' without tracing).
    traceparent: str = ""


@dataclass(frozen=True)
class WorkerRecord:
    id: str
    name: str
    job_type_ids: list[str]
    capacity: int
    active_jobs: int
    connected: bool
    last_heartbeat_time: datetime
    connect_time: datetime
    # This Connect stream's session: a reconnect supersedes it.
    session_id: str = ""
