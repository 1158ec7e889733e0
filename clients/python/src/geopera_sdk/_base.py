"""Settings shared by the sync and asyncio clients."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import any_pb2, symbol_database
from google.protobuf.message import Message

from geopera.v1 import kernel_pb2
from geopera_sdk._convert import result_type, to_params
from geopera_sdk._errors import GeoperaError, Internal
from geopera_sdk._retry import RetryPolicy, as_policy

VERSION = "0.1.0"

# What `execute` takes as params, and what takes a time (a datetime or RFC 3339 text).
Params = Message | Mapping[str, Any] | None
When = dt.datetime | str

_DEFAULT_OPTIONS: dict[str, Any] = {
    "grpc.primary_user_agent": f"geopera-sdk-python/{VERSION}",
    # Results (pages of items with band metadata) can exceed gRPC's 4 MiB default.
    "grpc.max_receive_message_length": 64 << 20,
    "grpc.max_send_message_length": 64 << 20,
    # Find a dead connection under a long, quiet watch within ~40 s (the server
    # accepts pings every 10 s); override with `options=` for stricter proxies.
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.http2.max_pings_without_data": 0,
}


def channel_options(options: Iterable[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    merged = dict(_DEFAULT_OPTIONS)
    merged.update(dict(options or ()))
    return list(merged.items())


def new_idempotency_key() -> str:
    """A fresh key for one logical spend call (reused by its retries)."""
    return str(uuid.uuid4())


class Settings:
    """Token, deadlines, retries and metadata of one client."""

    def __init__(
        self,
        token: str | None,
        timeout: float | None,
        retries: int | RetryPolicy | None,
        metadata: Iterable[tuple[str, str]] | None,
    ) -> None:
        self.token = token
        self.timeout = timeout
        self.retry_policy = as_policy(retries)
        self.extra_metadata = list(metadata or ())

    def metadata(self, idempotency_key: str | None = None) -> tuple[tuple[str, str], ...]:
        md = list(self.extra_metadata)
        if self.token:
            md.append(("authorization", f"Bearer {self.token}"))
        if idempotency_key is not None:
            md.append(("idempotency-key", idempotency_key))
        return tuple(md)


class Configured:
    """What both clients tell of their settings."""

    _settings: Settings

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._settings.retry_policy

    @property
    def timeout(self) -> float | None:
        return self._settings.timeout


def execute_request(operation: str, params: Params, validate_only: bool = False) -> kernel_pb2.ExecuteRequest:
    message = to_params(operation, params)
    request = kernel_pb2.ExecuteRequest(operation=operation, validate_only=validate_only)
    request.params.Pack(message)
    return request


def unpack_result(operation: str, response: kernel_pb2.ExecuteResponse) -> Message:
    """The typed result; the result type follows the naming rule, or else the
    `@type` of the answer (a newer geopera-api may know it)."""
    try:
        result = result_type(operation)()
    except LookupError:
        known = _from_type_url(response.result)
        if known is None:
            return response.result
        result = known
    if not response.result.Unpack(result):
        raise Internal(
            f"{operation}: expected a {result.DESCRIPTOR.full_name} result, got {response.result.type_url}",
            reason="UNEXPECTED_RESULT_TYPE",
        )
    return result


def _from_type_url(value: any_pb2.Any) -> Message | None:
    try:
        return symbol_database.Default().GetSymbol(value.type_url.rsplit("/", 1)[-1])()
    except KeyError:
        return None


__all__ = ["GeoperaError", "Params", "Settings", "When", "channel_options", "new_idempotency_key"]
