"""Pieces the fuzz tests share: hypothesis settings for the bounded sample,
the server's health, and a short repr for huge generated requests."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, settings

from tests.support.server import REPO

# The bounded sample of `make test`: per operation, EXAMPLES fully generated
# requests, and FOCUS_EXAMPLES for each part of a valid request made hostile
# alone. `make fuzz` sends far more (bench/fuzz.py).
EXAMPLES = int(os.environ.get("GEOPERA_FUZZ_EXAMPLES", "15"))
FOCUS_EXAMPLES = int(os.environ.get("GEOPERA_FUZZ_FOCUS_EXAMPLES", "3"))

# Derandomized: the same sample on every run, so a failure is reproducible and
# the sample's cost is fixed. No shrinking: a failure reports the request as sent.
SAMPLE = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
FOCUS_SAMPLE = settings(SAMPLE, max_examples=FOCUS_EXAMPLES)


@dataclass(frozen=True)
class Shown:
    """A generated value whose repr (in hypothesis' falsifying-example report)
    is cut to a readable length."""

    value: Any

    def __repr__(self) -> str:
        text = describe(self.value)
        return text if len(text) <= 1500 else text[:1500] + f"... ({len(text)} characters)"


def describe(value: Any) -> str:
    """A request as text; an `ExecuteRequest`'s params unpacked when they decode."""
    from tests.support.registry import REGISTRY

    if isinstance(value, bytes | str) and len(value) > 200:
        return f"{value[:100]!r}... ({len(value)} long)"
    if not hasattr(value, "ListFields"):
        return repr(value)
    operation = REGISTRY.get(getattr(value, "operation", "")) if hasattr(value, "params") else None
    if operation is not None and value.params.type_url == operation.params_type_url:
        params = operation.params_type()
        try:
            params.ParseFromString(value.params.value)
        except Exception:
            return str(value)
        return f"{operation.name} {json.dumps(_abridged(_plain(params)), ensure_ascii=False)}"
    return json.dumps(_abridged(_plain(value)), ensure_ascii=False)


def _plain(value: Any) -> Any:
    """A message as Python values (Struct numbers may be NaN: no json_format)."""
    if not hasattr(value, "ListFields"):
        return value.hex() if isinstance(value, bytes) else value
    name = value.DESCRIPTOR.full_name
    if name == "google.protobuf.Struct":
        return {k: _plain(v) for k, v in value.fields.items()}
    if name == "google.protobuf.ListValue":
        return [_plain(v) for v in value.values]
    if name == "google.protobuf.Value":
        kind = value.WhichOneof("kind")
        return None if kind in (None, "null_value") else _plain(getattr(value, kind))
    return {
        field.name: [_plain(v) for v in content] if field.is_repeated else _plain(content)
        for field, content in value.ListFields()
    }


def _abridged(value: Any) -> Any:
    """JSON with long lists and strings shortened, so what was hostile shows."""
    if isinstance(value, dict):
        return {k: _abridged(v) for k, v in value.items()}
    if isinstance(value, list):
        head = [_abridged(v) for v in value[:4]]
        return head + ([f"... {len(value) - 4} more"] if len(value) > 4 else [])
    if isinstance(value, str) and len(value) > 80:
        return value[:40] + f"... ({len(value)} characters, {len(value.encode())} bytes)"
    return value


def forbidden_texts(home: Any) -> tuple[str, ...]:
    """Server paths that must never appear in an error."""
    return (str(home), str(REPO))


def assert_serving(channel: grpc.Channel) -> None:
    """The server still answers its health check after the hostile requests."""
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def first_failure(failure: BaseException) -> str:
    """The message of a failure, or of the first one inside an exception group
    (hypothesis reports an example that failed differently when replayed as
    a FlakyFailure group)."""
    while isinstance(failure, BaseExceptionGroup) and failure.exceptions:
        failure = failure.exceptions[0]
    return f"{type(failure).__name__}: " + str(failure).split("\nassert ")[0][:3000]
