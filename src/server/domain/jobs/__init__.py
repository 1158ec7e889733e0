"""Processing jobs: job types and prices, the lifecycle, worker sessions,
claims and leases, job tokens, and job events (see service.py for the parts)."""

from geopera_kernel.raster.cost import MAX_CREDITS, CostModel
from geopera_kernel.server.domain.jobs.dispatcher import Cancellation, Dispatcher, WorkerSession
from geopera_kernel.server.domain.jobs.job_types import JobTypeRecord, JobTypes
from geopera_kernel.server.domain.jobs.logs import JobLogCaps, JobLogEntry, LogRecordIn
from geopera_kernel.server.domain.jobs.notices import Notifications
from geopera_kernel.server.domain.jobs.policy import JOB_RETRY_BACKOFF, LeasePolicy
from geopera_kernel.server.domain.jobs.records import (
    ACTIVE,
    STATUSES,
    TERMINAL,
    Assignment,
    Dispatch,
    JobCreate,
    JobError,
    JobEvent,
    JobQuery,
    JobRecord,
    JobSpend,
    WorkerRecord,
    event_snapshot,
)
from geopera_kernel.server.domain.jobs.service import JobService
from geopera_kernel.server.domain.jobs.sessions import Heartbeat, Welcome, WorkerHello, WorkerSessions
from geopera_kernel.server.domain.jobs.watch import JobLogEvent, job_events

__all__ = [
    "ACTIVE",
    "JOB_RETRY_BACKOFF",
    "MAX_CREDITS",
    "STATUSES",
    "TERMINAL",
    "Assignment",
    "Cancellation",
    "CostModel",
    "Dispatch",
    "Dispatcher",
    "Heartbeat",
    "JobCreate",
    "JobError",
    "JobEvent",
    "JobLogCaps",
    "JobLogEntry",
    "JobLogEvent",
    "JobQuery",
    "JobRecord",
    "JobService",
    "JobSpend",
    "JobTypeRecord",
    "JobTypes",
    "LeasePolicy",
    "LogRecordIn",
    "Notifications",
    "Welcome",
    "WorkerHello",
    "WorkerRecord",
    "WorkerSession",
    "WorkerSessions",
    "event_snapshot",
    "job_events",
]
