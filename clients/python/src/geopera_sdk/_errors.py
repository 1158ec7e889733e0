"""Typed errors, parsed from the rich status (`grpc-status-details-bin`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from geopera.v1 import errors_pb2


class GeoperaError(Exception):
    """An RPC that failed, or a client-side check that did.

    Branch on `code` and `reason` (the `google.rpc.ErrorInfo` reason, e.g.
    `ITEM_NOT_FOUND`), never on `message`.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        expected_schema: dict[str, Any] | None = None,
        expected_schema_subject: str = "",
        request_id: str = "",
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: list[tuple[str, str]] = list(field_violations)
        self.expected_schema = expected_schema
        self.expected_schema_subject = expected_schema_subject
        self.request_id = request_id
        self.status = status

    def __str__(self) -> str:
        text = f"{self.code.name}"
        if self.reason:
            text += f" {self.reason}"
        text += f": {self.message}"
        if self.field_violations:
            text += " [" + "; ".join(f"{f}: {d}" for f, d in self.field_violations) + "]"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, message={self.message!r})"


class Cancelled(GeoperaError):
    """CANCELLED."""


class Unknown(GeoperaError):
    """UNKNOWN."""


class InvalidArgument(GeoperaError):
    """INVALID_ARGUMENT: fix the request (see `field_violations`, `expected_schema`)."""


class DeadlineExceeded(GeoperaError, TimeoutError):
    """DEADLINE_EXCEEDED (also a `TimeoutError`)."""


class NotFound(GeoperaError):
    """NOT_FOUND."""


class AlreadyExists(GeoperaError):
    """ALREADY_EXISTS."""


class PermissionDenied(GeoperaError):
    """PERMISSION_DENIED (`MISSING_SCOPE`, `PROJECT_ACCESS_DENIED`, ...)."""


class ResourceExhausted(GeoperaError):
    """RESOURCE_EXHAUSTED."""


class FailedPrecondition(GeoperaError):
    """FAILED_PRECONDITION (`INSUFFICIENT_CREDITS`, `IDEMPOTENCY_KEY_REUSED`, ...)."""


class Aborted(GeoperaError):
    """ABORTED (`IDEMPOTENCY_KEY_IN_USE`)."""


class OutOfRange(GeoperaError):
    """OUT_OF_RANGE."""


class Unimplemented(GeoperaError):
    """UNIMPLEMENTED."""


class Internal(GeoperaError):
    """INTERNAL: quote `request_id` when reporting it."""


class Unavailable(GeoperaError):
    """UNAVAILABLE (retried by the SDK where that is safe)."""


class DataLoss(GeoperaError):
    """DATA_LOSS."""


class Unauthenticated(GeoperaError):
    """UNAUTHENTICATED: missing, malformed, unknown or revoked token."""


class ChecksumMismatch(DataLoss):
    """Downloaded (or uploaded) bytes do not match the announced SHA-256."""


_BY_CODE: dict[grpc.StatusCode, type[GeoperaError]] = {
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNKNOWN: Unknown,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


class JobFailedError(GeoperaError):
    """`wait()` saw the job end FAILED (the RPCs all worked: the job did not). `job` is the
    final snapshot, `reason` its ErrorInfo reason, `logs` its last ERROR (and worse) log
    records (`geopera.v1.JobLogEntry`), oldest first."""

    def __init__(self, job: Any, reason: str, logs: Sequence[Any]) -> None:
        super().__init__(job.error.message or "the job failed", code=grpc.StatusCode.ABORTED, reason=reason)
        self.job = job
        self.job_id: str = job.id
        self.logs = list(logs)

    def __str__(self) -> str:
        text = f"job {self.job_id} failed: {self.reason or 'JOB_FAILED'}: {self.message}"
        if self.logs:
            text += "\nlast error logs:" + "".join(
                f"\n  [attempt {e.attempt}] {e.message.splitlines()[0] if e.message else ''}" for e in self.logs
            )
        return text


def error_class(code: grpc.StatusCode) -> type[GeoperaError]:
    return _BY_CODE.get(code, GeoperaError)


# The trailer that carries the google.rpc.Status (grpc_status's constant, which its stubs omit).
_DETAILS_KEY = "grpc-status-details-bin"


def _trailing(err: grpc.RpcError) -> list[tuple[str, Any]]:
    try:
        # Any: a sync call gives (key, value) namedtuples, grpc.aio a Metadata of pairs;
        # the stubs know only the first, and not as tuples.
        metadata: Any = err.trailing_metadata()
    except Exception:
        return []
    return list(metadata or ())


def _rich_status(err: grpc.RpcError, trailing: list[tuple[str, Any]]) -> status_pb2.Status | None:
    try:
        # from_call reads only code(), details() and trailing_metadata(), which an
        # aio error has too; the stub asks for a grpc.Call, which only sync errors are.
        return rpc_status.from_call(err)  # type: ignore[arg-type]
    except ValueError:
        # Code or message of the status proto disagree with the call's: still
        # use the details, they are what the server meant to say.
        for key, value in trailing:
            if key == _DETAILS_KEY:
                return status_pb2.Status.FromString(value)
    except Exception:
        return None
    return None


def error_from_rpc(err: grpc.RpcError) -> GeoperaError:
    """The typed error of a failed call (sync `grpc.RpcError` or `grpc.aio.AioRpcError`)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = (err.details() if hasattr(err, "details") else "") or ""
    trailing = _trailing(err)
    status = _rich_status(err, trailing)
    fields: dict[str, Any] = {"code": code, "status": status}
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                fields.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields["field_violations"] = [(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(errors_pb2.ExpectedSchema.DESCRIPTOR):
                schema = errors_pb2.ExpectedSchema()
                detail.Unpack(schema)
                fields["expected_schema"] = json_format.MessageToDict(schema.json_schema)
                fields["expected_schema_subject"] = schema.subject
    request_id = dict(fields.get("metadata", {})).get("request_id", "")
    if not request_id:
        for key, value in trailing:
            if key == "x-request-id":
                request_id = value.decode() if isinstance(value, bytes) else str(value)
    fields["request_id"] = request_id
    return error_class(code)(message, **fields)


__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ChecksumMismatch",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "GeoperaError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "error_from_rpc",
]
