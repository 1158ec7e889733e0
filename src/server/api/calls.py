"""Per-call plumbing shared by every RPC: request id, the access log line, and
mapping whatever the call raised onto a gRPC status (through `status.py`)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from grpc import aio

from server import callstats
from server.api.status import to_grpc_status, unexpected_error
from server.errors import Code, DomainError

access_log = logging.getLogger("geopera.access")
log = logging.getLogger(__name__)

_REQUEST_ID_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def metadata_value(context: aio.ServicerContext, key: str) -> str | None:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            value = item.value
            return value.decode() if isinstance(value, bytes) else value
    return None


def _request_id(context: aio.ServicerContext) -> str:
    given = metadata_value(context, "x-request-id")
    if given and len(given) <= 128 and set(given) <= _REQUEST_ID_OK:
        return given
    return "req_" + secrets.token_hex(8)


@dataclass
class CallInfo:
    """What the access log says about one call; handlers fill in what they learn."""

    rpc: str
    request_id: str
    operation: str = ""
    principal_id: str = ""
    extra: dict[str, object] = field(default_factory=dict)


@asynccontextmanager
async def rpc_call(context: aio.ServicerContext, rpc: str) -> AsyncIterator[CallInfo]:
    call = CallInfo(rpc=rpc, request_id=_request_id(context))
    stats = callstats.begin()
    started = time.perf_counter()
    code = "OK"
    try:
        context.set_trailing_metadata((("x-request-id", call.request_id),))
        yield call
    except DomainError as err:
        code = err.code.name
        await context.abort_with_status(to_grpc_status(err, call.request_id))
    except asyncio.CancelledError:
        remaining = context.time_remaining()
        code = "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
        raise
    except aio.AbortError:
        raise
    except Exception as exc:
        err = unexpected_error(exc, call.request_id)
        code = err.code.name
        log.exception("unhandled error in %s (request %s)", rpc, call.request_id)
        await context.abort_with_status(to_grpc_status(err, call.request_id))
    finally:
        entry = {
            "rpc": rpc,
            "operation": call.operation,
            "principal": call.principal_id,
            "code": code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "request_id": call.request_id,
            **stats.log_fields(),
            **call.extra,
        }
        access_log.info("call", extra={"access": entry})


def unavailable(message: str) -> DomainError:
    return DomainError(Code.UNAVAILABLE, "NOT_READY", message)


__all__ = ["CallInfo", "metadata_value", "rpc_call", "unavailable"]
