"""What every answer to a hostile request must satisfy, on gRPC and HTTP alike:
OK or a client error with a status the contract names, one ErrorInfo (domain
`geopera.v1`, UPPER_SNAKE_CASE reason), and no server path or traceback in
what the client sees. Shared by the bounded sample in `make test` and the
`make fuzz` runner."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "geopera.v1"
REASON = re.compile(r"^[A-Z][A-Z0-9_]*$")
# What a client may get for a request it got wrong. RESOURCE_EXHAUSTED only as
# the server's own error (with ErrorInfo): without one it is the client's
# metadata limit refusing oversized trailers, i.e. the real error was lost.
CLIENT_ERRORS = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
        "ABORTED",
        "RESOURCE_EXHAUSTED",
    }
)
LEAK_MARKERS = ("Traceback (most recent call last)", 'File "/')


@dataclass(frozen=True)
class Outcome:
    """One answer, reduced to what the invariants look at."""

    code: str  # gRPC status name, "OK", or for HTTP the status number as text
    reason: str = ""
    domain: str = ""
    has_error_info: bool = False
    # The code inside grpc-status-details-bin differs from the call's: the
    # client replaced the server's status (e.g. trailers over its size limit).
    code_mismatch: str = ""
    texts: tuple[str, ...] = field(default=(), repr=False)  # message, metadata, violations


def grpc_outcome(code_name: str, details: str | None, trailing: Sequence[tuple[str, Any]] | None) -> Outcome:
    """From a failed call's code, details and trailing metadata (sync or aio)."""
    texts = [details or ""]
    for key, value in trailing or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:
            return Outcome(code_name, texts=tuple(texts))
        texts.append(status.message)
        mismatch = "" if _code_name(status.code) == code_name else _code_name(status.code)
        info: error_details_pb2.ErrorInfo | None = None
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                texts += [*info.metadata.values()]
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                texts += [v.description for v in bad.field_violations]
        if info is not None:
            return Outcome(code_name, info.reason, info.domain, True, mismatch, tuple(texts))
    return Outcome(code_name, texts=tuple(texts))


def _code_name(number: int) -> str:
    import grpc

    return next((code.name for code in grpc.StatusCode if code.value[0] == number), str(number))


def rpc_error_outcome(err: Any) -> Outcome:
    """From a `grpc.RpcError` (sync) or `grpc.aio.AioRpcError`."""
    return grpc_outcome(err.code().name, err.details(), err.trailing_metadata())


def grpc_violation(outcome: Outcome, forbidden: Iterable[str]) -> str | None:
    """Why `outcome` breaks the invariants, or None."""
    if outcome.code == "OK":
        return None
    if outcome.code not in CLIENT_ERRORS:
        return f"status {outcome.code} ({outcome.reason or 'no ErrorInfo'})"
    if not outcome.has_error_info:
        return f"{outcome.code} without ErrorInfo (trailers lost?)"
    if outcome.code_mismatch:
        sent = f"{outcome.code_mismatch} {outcome.reason}"
        return f"the client saw {outcome.code}, the server sent {sent} (trailers refused?)"
    return _detail_violation(outcome, forbidden)


def _detail_violation(outcome: Outcome, forbidden: Iterable[str]) -> str | None:
    if outcome.domain != ERROR_DOMAIN:
        return f"ErrorInfo domain {outcome.domain!r}"
    if not REASON.match(outcome.reason):
        return f"reason {outcome.reason!r} is not UPPER_SNAKE_CASE"
    for text in outcome.texts:
        for marker in (*forbidden, *LEAK_MARKERS):
            if marker and marker in text:
                return f"{outcome.reason}: the error shows {marker!r}"
    return None


def http_outcome(status: int, body: bytes) -> Outcome:
    if status < 400:
        return Outcome(str(status))
    try:
        parsed = json.loads(body)
    except ValueError:
        return Outcome(str(status), texts=(body[:2000].decode(errors="replace"),))
    if not isinstance(parsed, dict):
        return Outcome(str(status))
    details = parsed.get("details") if isinstance(parsed.get("details"), dict) else {}
    texts = [str(parsed.get("message", "")), *map(str, (details.get("metadata") or {}).values())]
    texts += [str(v.get("description", "")) for v in details.get("field_violations") or [] if isinstance(v, dict)]
    reason = parsed.get("reason")
    return Outcome(str(status), str(reason or ""), ERROR_DOMAIN, isinstance(reason, str), tuple(texts))


def http_violation(outcome: Outcome, forbidden: Iterable[str]) -> str | None:
    status = int(outcome.code)
    if status < 400:
        return None
    if status >= 500:
        return f"HTTP {status} ({outcome.reason or 'no reason'})"
    if not outcome.has_error_info:
        return f"HTTP {status} without a JSON error body"
    return _detail_violation(outcome, forbidden)
