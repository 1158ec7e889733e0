"""The I/O under the client's operations, in two kinds.

The operations are written once, as coroutines (_aio.py), and do all their
I/O through a `ClientIO`: its stub's calls, `sleep`, `to_thread` and
`in_thread`. `AsyncIO` is grpc.aio on the running event loop (`AsyncClient`).
`BlockingIO` is grpc's blocking channel behind the same awaitable interface:
none of its awaitables ever suspends, so `run(operation)` drives an operation
to its end on the calling thread, with no event loop and no extra thread
(`Client`, _client.py). A blocking call therefore costs what a call on grpc's
blocking stub costs, plus a few coroutine frames.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

import grpc

from geopera.v1 import kernel_pb2_grpc

T = TypeVar("T")


class ClientIO(Protocol):
    def __init__(
        self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
    ) -> None: ...

    @property
    def stub(self) -> Any:
        """KernelService: unary-response calls are awaited, streams iterated with `async for`
        and cancelled with `cancel()`."""

    async def close(self) -> None: ...

    async def sleep(self, delay: float) -> None: ...

    async def to_thread(self, function: Callable[..., T], /, *args: Any) -> T: ...

    def in_thread(self, iterator: Iterator[T]) -> AsyncIterator[T] | Iterator[T]:
        """A blocking iterator (file reads) as a request stream for the stub."""


def _channel(
    target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]], aio: bool
) -> Any:
    module: Any = grpc.aio if aio else grpc
    if credentials is not None:
        return module.secure_channel(target, credentials, options=options)
    return module.insecure_channel(target, options=options)


class AsyncIO:
    """grpc.aio; the channel is made on first use, inside the running event loop."""

    def __init__(
        self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
    ) -> None:
        self._open: Callable[[], grpc.aio.Channel] = lambda: _channel(target, credentials, options, aio=True)
        self._channel: grpc.aio.Channel | None = None
        self._stub: kernel_pb2_grpc.KernelServiceAsyncStub | None = None

    @property
    def stub(self) -> kernel_pb2_grpc.KernelServiceAsyncStub:
        if self._stub is None:
            self._channel = self._open()
            self._stub = kernel_pb2_grpc.KernelServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(delay)

    async def to_thread(self, function: Callable[..., T], /, *args: Any) -> T:
        return await asyncio.to_thread(function, *args)

    def in_thread(self, iterator: Iterator[T]) -> AsyncIterator[T]:
        return _in_thread(iterator)


async def _in_thread(iterator: Iterator[T]) -> AsyncIterator[T]:
    """A blocking iterator driven from a worker thread."""
    done = _Done()
    while True:
        item: T | _Done = await asyncio.to_thread(next, iterator, done)
        if isinstance(item, _Done):
            return
        yield item


class _Done:
    """The end of `_in_thread`'s iterator (StopIteration cannot cross a thread's future)."""


class BlockingIO:
    """grpc's blocking channel (thread-safe, made at once); its awaitables never suspend."""

    def __init__(
        self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
    ) -> None:
        self._channel = _channel(target, credentials, options, aio=False)
        self.stub = _BlockingStub(kernel_pb2_grpc.KernelServiceStub(self._channel))

    async def close(self) -> None:
        self._channel.close()

    async def sleep(self, delay: float) -> None:
        time.sleep(delay)  # noqa: ASYNC251 (never on an event loop: see the module's docstring)

    async def to_thread(self, function: Callable[..., T], /, *args: Any) -> T:
        return function(*args)

    def in_thread(self, iterator: Iterator[T]) -> Iterator[T]:
        return iterator  # grpc's blocking stub reads a request iterator on a thread of its own


class _BlockingStub:
    """KernelServiceStub's calls as awaitables and async iterators that never suspend."""

    def __init__(self, stub: kernel_pb2_grpc.KernelServiceStub) -> None:
        self._stub = stub

    async def Execute(self, request: Any, **kwargs: Any) -> Any:
        return self._stub.Execute(request, **kwargs)

    async def UploadAsset(self, requests: Iterable[Any], **kwargs: Any) -> Any:
        return self._stub.UploadAsset(iter(requests), **kwargs)

    def DownloadAsset(self, request: Any, **kwargs: Any) -> _BlockingStream:
        return _BlockingStream(self._stub.DownloadAsset(request, **kwargs))

    def WatchJob(self, request: Any, **kwargs: Any) -> _BlockingStream:
        return _BlockingStream(self._stub.WatchJob(request, **kwargs))

    def WatchJobs(self, request: Any, **kwargs: Any) -> _BlockingStream:
        return _BlockingStream(self._stub.WatchJobs(request, **kwargs))


class _BlockingStream:
    """A blocking response stream as an async iterator (each `__anext__` blocks, then returns)."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __aiter__(self) -> _BlockingStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._call)
        except StopIteration:
            raise StopAsyncIteration from None

    def cancel(self) -> None:
        self._call.cancel()


def run(operation: Awaitable[T]) -> T:
    """The result of an operation over `BlockingIO`, run to its end on this thread."""
    steps = operation.__await__()
    try:
        steps.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    close = getattr(steps, "close", None)
    if close is not None:
        close()
    raise RuntimeError("a blocking client's operation waited on an event loop: only BlockingIO may run it")
