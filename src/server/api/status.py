"""The one place domain errors become `google.rpc.Status`.

Every error gets exactly one `ErrorInfo` (domain `geopera.v1`); validation
errors add a `BadRequest`, invalid free-form params an `ExpectedSchema`.
"""

from __future__ import annotations

import grpc
import psycopg
from google.protobuf import any_pb2, struct_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from geopera.v1 import errors_pb2
from server.errors import Code, DomainError

ERROR_DOMAIN = "geopera.v1"
# Trailers are capped near 16 KB by common proxies: keep details well below.
_MAX_DETAIL_BYTES = 12_000
_MAX_MESSAGE_CHARS = 1_000
_MAX_METADATA_CHARS = 2_000


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_proto(err: DomainError, request_id: str = "") -> status_pb2.Status:
    # Messages may quote client input (an id, a name): cap every text so the
    # trailers stay far below the ~16 KB a proxy or client accepts.
    metadata = {key[:64]: value[:_MAX_METADATA_CHARS] for key, value in err.metadata.items()}
    if request_id:
        metadata["request_id"] = request_id
    status = status_pb2.Status(code=int(err.code), message=_clip(err.message, _MAX_MESSAGE_CHARS))
    status.details.append(_pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN, metadata=metadata)))
    if err.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_clip(v.field, 200), description=_clip(v.description, 500)
                )
                for v in err.violations[:50]
            ]
        )
        status.details.append(_pack(bad_request))
    if err.expected_schema is not None:
        schema = struct_pb2.Struct()
        schema.update(err.expected_schema.json_schema)
        detail = errors_pb2.ExpectedSchema(subject=err.expected_schema.subject, json_schema=schema)
        if detail.ByteSize() < _MAX_DETAIL_BYTES - status.ByteSize():
            status.details.append(_pack(detail))
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
