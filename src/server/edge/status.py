"""The one place domain errors become `google.rpc.Status` (and the JSON error
body of the HTTP and MCP projections), and a rich status is read back.

Every error gets exactly one `ErrorInfo` (domain `geopera.v1`); validation
errors add a `BadRequest`, invalid free-form params an `ExpectedSchema`. The
JSON body says the same: `{code, reason, message, request_id, details:
{metadata, field_violations, expected_schema}}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg
from google.protobuf import any_pb2, json_format, struct_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from geopera.v1 import errors_pb2
from geopera_kernel.server.errors import Code, DomainError

ERROR_DOMAIN = "geopera.v1"
# gRPC clients refuse trailers over 8 KiB at random and all over 16 KiB
# (RESOURCE_EXHAUSTED instead of the real error). The trailers carry the
# message twice: percent-encoded in `grpc-message` (a non-ASCII byte takes 3)
# and inside `grpc-status-details-bin` (the serialized Status). Everything
# is capped in UTF-8 bytes, never characters: one character may take 4.
_MAX_TRAILER_BYTES = 7_000
_MAX_MESSAGE_BYTES = 1_000
_MAX_METADATA_BYTES = 1_000
_MAX_METADATA_TOTAL_BYTES = 2_000
_MAX_FIELD_BYTES = 200
_MAX_DESCRIPTION_BYTES = 500
_MAX_VIOLATIONS = 50


def _clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, on a character boundary (lone
    surrogates, which protobuf strings cannot hold, become "?")."""
    encoded = text.encode(errors="replace")
    if len(encoded) <= limit:
        return encoded.decode()
    return encoded[: max(limit - 3, 0)].decode(errors="ignore") + ("…" if limit >= 3 else "")


def _percent_encoded_bytes(text: str) -> int:
    """Length of `text` as gRPC sends it in `grpc-message` (RFC 3986-style escapes)."""
    return sum(1 if 0x20 <= byte <= 0x7E and byte != 0x25 else 3 for byte in text.encode())


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_proto(err: DomainError, request_id: str = "") -> status_pb2.Status:
    # Messages may quote client input (an id, a name): every text is capped,
    # then whole details go (last violations first, then the schema) until
    # the trailers fit the budget.
    metadata: dict[str, str] = {}
    room = _MAX_METADATA_TOTAL_BYTES
    for key, value in err.metadata.items():
        entry_key, entry_value = _clip(key, 64), _clip(value, min(_MAX_METADATA_BYTES, room))
        room -= len(entry_key.encode()) + len(entry_value.encode())
        if room < 0:
            break
        metadata[entry_key] = entry_value
    if request_id:
        metadata["request_id"] = request_id
    message = _clip(err.message, _MAX_MESSAGE_BYTES)
    status = status_pb2.Status(code=int(err.code), message=message)
    status.details.append(_pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN, metadata=metadata)))
    budget = _MAX_TRAILER_BYTES - _percent_encoded_bytes(message)
    violations = [
        error_details_pb2.BadRequest.FieldViolation(
            field=_clip(v.field, _MAX_FIELD_BYTES), description=_clip(v.description, _MAX_DESCRIPTION_BYTES)
        )
        for v in err.violations[:_MAX_VIOLATIONS]
    ]
    while violations:
        bad_request = _pack(error_details_pb2.BadRequest(field_violations=violations))
        if status.ByteSize() + bad_request.ByteSize() + 8 <= budget or len(violations) == 1:
            status.details.append(bad_request)
            break
        violations.pop()
    if err.expected_schema is not None:
        schema = struct_pb2.Struct()
        schema.update(err.expected_schema.json_schema)
        detail = _pack(errors_pb2.ExpectedSchema(subject=err.expected_schema.subject, json_schema=schema))
        if status.ByteSize() + detail.ByteSize() + 8 <= budget:
            status.details.append(detail)
    return status


def internal_error(request_id: str) -> DomainError:
    return DomainError(
        Code.INTERNAL,
        "INTERNAL",
        f"internal error; quote request id {request_id} when reporting it",
    )


def unexpected_error(exc: BaseException, request_id: str) -> DomainError:
    """What a client sees for an exception no handler turned into a DomainError.
    A lost database connection (PostgreSQL restarting, a failover, the pool
    out of connections) is the service's passing trouble, not a bug: UNAVAILABLE,
    which clients retry (spend operations with their idempotency key)."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return DomainError(
            Code.UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
            f"the database is unavailable for a moment; retry (request id {request_id})",
        )
    return internal_error(request_id)


def to_grpc_status(err: DomainError, request_id: str) -> grpc.Status:
    status = rpc_status.to_status(status_proto(err, request_id))
    trailing = (*tuple(status.trailing_metadata), ("x-request-id", request_id))
    return _Status(status.code, status.details, trailing)


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


GRPC_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
assert code_pb2.INVALID_ARGUMENT == Code.INVALID_ARGUMENT


def error_body(
    code: str,
    reason: str,
    message: str,
    request_id: str,
    metadata: Mapping[str, str] | None = None,
    field_violations: list[dict[str, str]] | None = None,
    expected_schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON error body both JSON projections answer (HTTP and MCP)."""
    details: dict[str, Any] = {"metadata": dict(metadata or {})}
    if field_violations:
        details["field_violations"] = list(field_violations)
    if expected_schema is not None:
        details["expected_schema"] = expected_schema
    return {"code": code, "reason": reason, "message": message, "request_id": request_id, "details": details}


def domain_error_body(err: DomainError, request_id: str) -> dict[str, Any]:
    violations = [{"field": v.field, "description": v.description} for v in err.violations]
    schema = err.expected_schema.json_schema if err.expected_schema is not None else None
    return error_body(err.code.name, err.reason, err.message, request_id, err.metadata, violations, schema)


# The trailer that carries the google.rpc.Status (grpc_status's constant, which its stubs omit).
DETAILS_TRAILER = "grpc-status-details-bin"


@dataclass
class StatusDetails:
    """What a rich status says beyond its code and message (empty without one)."""

    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[dict[str, str]] = field(default_factory=list)
    expected_schema: dict[str, Any] | None = None


def status_details(trailing_metadata: Iterable[tuple[str, Any]] | None) -> StatusDetails:
    """Reads the `google.rpc.Status` a failed call's trailers carry (what
    `status_proto` wrote); a missing or malformed one gives empty details."""
    found = StatusDetails()
    for key, value in trailing_metadata or ():
        if key != DETAILS_TRAILER or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:
            return found
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                found.reason, found.metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = bad.field_violations
                found.field_violations = [{"field": v.field, "description": v.description} for v in violations]
            elif detail.Is(errors_pb2.ExpectedSchema.DESCRIPTOR):
                schema = errors_pb2.ExpectedSchema()
                detail.Unpack(schema)
                found.expected_schema = json_format.MessageToDict(schema.json_schema)
        break
    return found
