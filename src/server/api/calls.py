"""Per-call plumbing shared by every RPC: request id, the access log line, and
mapping whatever the call raised onto a gRPC status (through `status.py`)."""

from __future__ import annotations

import asyncio
import contextlib
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
    for name, value in context.invocation_metadata() or ():
        if name == key:
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


class CallsInFlight:
    """The calls this server runs. Once it stops, new calls fail UNAVAILABLE
    `SERVER_SHUTTING_DOWN` (clients retry them on another replica or later)
    while those in flight get the shutdown grace to finish."""

    def __init__(self) -> None:
        self.count = 0
        self.stopping = False
        self._idle: asyncio.Event | None = None

    def ended(self) -> None:
        self.count -= 1
        if self.count == 0 and self._idle is not None:
            self._idle.set()

    async def drain(self, grace: float) -> float:
        """Refuse new calls, wait up to `grace` seconds for those in flight;
        returns the grace left."""
        self.stopping = True
        self._idle = asyncio.Event()
        deadline = time.monotonic() + grace
        if self.count:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        return max(0.0, deadline - time.monotonic())


CALLS = CallsInFlight()


@asynccontextmanager
async def rpc_call(context: aio.ServicerContext, rpc: str) -> AsyncIterator[CallInfo]:
    call = CallInfo(rpc=rpc, request_id=_request_id(context))
    stats = callstats.begin()
    started = time.perf_counter()
    code = "OK"
    counted = False
    try:
        context.set_trailing_metadata((("x-request-id", call.request_id),))
        if CALLS.stopping:
            raise DomainError(Code.UNAVAILABLE, "SERVER_SHUTTING_DOWN", "the server is stopping; retry the call")
        CALLS.count += 1
        counted = True
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
        error = unexpected_error(exc, call.request_id)
        code = error.code.name
        log.exception("unhandled error in %s (request %s)", rpc, call.request_id)
        await context.abort_with_status(to_grpc_status(error, call.request_id))
    finally:
        if counted:
            CALLS.ended()
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


__all__ = ["CALLS", "CallInfo", "metadata_value", "rpc_call", "unavailable"]
