"""Typed Python SDK of the Geopera kernel (gRPC): `Client` (sync) and
`AsyncClient` (asyncio), typed errors, job handles, uploads and downloads.
See README.md for a tour."""

from geopera_sdk._aio import AsyncBatch, AsyncClient, AsyncJob, AsyncJobsWatch, AsyncJobWatch
from geopera_sdk._analytics import AnalyticsResult
from geopera_sdk._base import VERSION as __version__
from geopera_sdk._client import Batch, Client, Job, JobsWatch, JobWatch
from geopera_sdk._convert import job_status_name, message_base_name, params_type, result_type
from geopera_sdk._errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    ChecksumMismatch,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    GeoperaError,
    Internal,
    InvalidArgument,
    JobFailedError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from geopera_sdk._jsonview import to_json
from geopera_sdk._retry import RetryPolicy
from geopera_sdk._transfer import DownloadResult, SignedUrl

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AnalyticsResult",
    "AsyncBatch",
    "AsyncClient",
    "AsyncJob",
    "AsyncJobWatch",
    "AsyncJobsWatch",
    "Batch",
    "Cancelled",
    "ChecksumMismatch",
    "Client",
    "DataLoss",
    "DeadlineExceeded",
    "DownloadResult",
    "FailedPrecondition",
    "GeoperaError",
    "Internal",
    "InvalidArgument",
    "Job",
    "JobFailedError",
    "JobWatch",
    "JobsWatch",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "SignedUrl",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "__version__",
    "job_status_name",
    "message_base_name",
    "params_type",
    "result_type",
    "to_json",
]
