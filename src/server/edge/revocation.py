"""Open streams end when their token is revoked.

A unary call checks its token once; a stream (a worker's Connect, WatchJob,
UploadAsset, DownloadAsset, the HTTP job-event stream) can outlive a
revocation by hours. Each one (the gRPC ones through the edge interceptor)
watches its token (`TokenService.wait_revoked`:
looked up again whenever its cached resolution expires) and ends with
UNAUTHENTICATED `TOKEN_REVOKED` within the token-cache time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

from grpc import aio

from geopera_kernel.server.auth import TokenService
from geopera_kernel.server.edge.call import CallInfo
from geopera_kernel.server.edge.status import to_grpc_status

T = TypeVar("T")


def end_on_revocation(
    context: aio.ServicerContext, tokens: TokenService, call: CallInfo, authorization: str | None
) -> None:
    """Ends the current gRPC call once its token is revoked: the status goes
    out at once (whatever the handler is waiting on), then the handler is
    cancelled so that its cleanup runs. Call it after authenticating."""
    handler = asyncio.current_task()

    async def watch() -> None:
        error = await tokens.wait_revoked(authorization)
        call.extra.update(code=error.code.name, revoked=True)  # for the access log line
        try:
            await context.abort_with_status(to_grpc_status(error, call.request_id))
        except aio.AbortError:
            pass
        except aio.UsageError:
            return  # the call had ended meanwhile
        if handler is not None:
            handler.cancel()

    watcher = asyncio.create_task(watch(), name=f"revocation watch of {call.rpc}")
    # types-grpcio declares aio's done callback as a class, not a callable type: nothing matches it.
    context.add_done_callback(lambda _: watcher.cancel())  # type: ignore[arg-type]


async def until_revoked(stream: AsyncIterator[T], tokens: TokenService, authorization: str | None) -> AsyncIterator[T]:
    """`stream`'s items until it ends, or until the token is revoked: then it
    raises the UNAUTHENTICATED `TOKEN_REVOKED` error (for streams that report
    errors in-band, like the HTTP job-event stream)."""
    revoked = asyncio.ensure_future(tokens.wait_revoked(authorization))
    iterator = aiter(stream)
    step: asyncio.Future[T] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({step, revoked}, return_when=asyncio.FIRST_COMPLETED)
            if step not in done:
                raise revoked.result()
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        revoked.cancel()
        if step is not None and not step.done():
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await step
