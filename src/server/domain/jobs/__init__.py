"""Processing jobs: job types and prices, the lifecycle, worker sessions,
claims and leases, job tokens, and job events (see service.py for the parts)."""

from raster.cost import MAX_CREDITS, CostModel
from server.domain.jobs.dispatcher import Cancellation, Dispatcher, WorkerSession
from server.domain.jobs.job_types import JOB_TYPE_ID, JobTypeRecord, JobTypes
from server.domain.jobs.notices import Notifications
from server.domain.jobs.policy import LeasePolicy
from server.domain.jobs.records import (
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
    WorkerRecord,
    event_snapshot,
)
from server.domain.jobs.service import JobService
from server.domain.jobs.sessions import Heartbeat, Welcome, WorkerHello, WorkerSessions
from server.domain.jobs.watch import job_events

__all__ = [
    "ACTIVE",
    "JOB_TYPE_ID",
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
    "JobQuery",
    "JobRecord",
    "JobService",
    "JobTypeRecord",
    "JobTypes",
    "LeasePolicy",
    "Notifications",
    "Welcome",
    "WorkerHello",
    "WorkerRecord",
    "WorkerSession",
    "WorkerSessions",
    "event_snapshot",
    "job_events",
]
