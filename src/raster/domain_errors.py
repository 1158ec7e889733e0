"""Domain errors: every failure a client can cause is one of these.

A `DomainError` carries a status code, an UPPER_SNAKE_CASE reason, a message,
and optionally field violations and an expected JSON Schema. Exactly one place
(`geopera_kernel.server.edge.status`) turns it into a `google.rpc.Status`; domain code never
imports grpc. It lives in the shared package because the shared GeoJSON parser
(`geopera_kernel.raster.geo`) and cost model (`geopera_kernel.raster.cost`) raise it; the server imports it
as `geopera_kernel.server.errors`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Code",
    "DomainError",
    "ExpectedSchema",
    "FieldViolation",
    "already_exists",
    "failed_precondition",
    "invalid_argument",
    "not_found",
    "permission_denied",
    "unauthenticated",
]


class Code(enum.IntEnum):
    """The subset of `google.rpc.Code` the kernel returns (same numbers)."""

    CANCELLED = 1
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field: `field` is a dotted path (`params.aoi_geometry.coordinates[0]`)."""

    field: str
    description: str


@dataclass(frozen=True)
class ExpectedSchema:
    subject: str
    json_schema: dict[str, Any]


@dataclass
class DomainError(Exception):
    code: Code
    reason: str
    message: str
    violations: list[FieldViolation] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    expected_schema: ExpectedSchema | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (Exception's default passes only the message): a method's error raised
        # on a Dask worker reaches the caller whole.
        fields = (self.code, self.reason, self.message, self.violations, self.metadata, self.expected_schema)
        return (type(self), fields)


def invalid_argument(
    reason: str,
    message: str,
    *,
    field: str | None = None,
    violations: list[FieldViolation] | None = None,
    metadata: dict[str, str] | None = None,
    expected_schema: ExpectedSchema | None = None,
) -> DomainError:
    all_violations = list(violations or [])
    if field is not None:
        all_violations.insert(0, FieldViolation(field, message))
    return DomainError(Code.INVALID_ARGUMENT, reason, message, all_violations, metadata or {}, expected_schema)


def not_found(reason: str, message: str, **metadata: str) -> DomainError:
    return DomainError(Code.NOT_FOUND, reason, message, metadata=metadata)


def permission_denied(reason: str, message: str, **metadata: str) -> DomainError:
    return DomainError(Code.PERMISSION_DENIED, reason, message, metadata=metadata)


def failed_precondition(reason: str, message: str, **metadata: str) -> DomainError:
    return DomainError(Code.FAILED_PRECONDITION, reason, message, metadata=metadata)


def already_exists(reason: str, message: str, **metadata: str) -> DomainError:
    return DomainError(Code.ALREADY_EXISTS, reason, message, metadata=metadata)


def unauthenticated(message: str) -> DomainError:
    return DomainError(Code.UNAUTHENTICATED, "UNAUTHENTICATED", message)
