"""The worker's calls back to the server for one job, with its job token: source downloads,
progress reports (which also bring cancellation), and the outputs' upload; and how a call
the server may not have received is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from geopera.v1 import kernel_pb2, worker_pb2
from geopera_kernel.raster.digest import size_and_sha256
from geopera_kernel.worker.plugin import AnalyticsAnswer, JobFailed, JobOutput

log = logging.getLogger("geopera.worker")

CHUNK_BYTES = 1 << 20
PROGRESS_INTERVAL_SECONDS = 0.2
# Calls the server may not have received are sent again on these, for up to
# RESEND_SECONDS (a server restart); past the lease the attempt is over anyway.
RESEND_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
RESEND_SECONDS = 60.0


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


async def download_asset(kernel: Any, href: str, target: Path, metadata: Any) -> Path:
    """A source asset streamed to ``target`` over DownloadAsset, its sha256 checked."""
    digest = hashlib.sha256()
    expected = ""
    with target.open("wb") as out:
        async for chunk in kernel.DownloadAsset(kernel_pb2.DownloadAssetRequest(resource_name=href), metadata=metadata):
            if chunk.sha256:
                expected = chunk.sha256
            digest.update(chunk.data)
            await asyncio.to_thread(out.write, chunk.data)
    if expected and digest.hexdigest() != expected:
        raise JobFailed("SOURCE_CORRUPT", f"downloaded {href} does not match its checksum", retryable=True)
    return target


async def _file_chunks(path: Path, **where: str) -> AsyncIterator[worker_pb2.OutputChunk]:
    """A file's bytes as OutputChunks (`where`: its output_key and asset_key, or its
    artifact_key), the last one empty with finish_write."""
    offset = 0
    with path.open("rb") as source:
        while True:
            data = await asyncio.to_thread(source.read, CHUNK_BYTES)
            yield worker_pb2.OutputChunk(**where, write_offset=offset, data=data, finish_write=not data)
            if not data:
                return
            offset += len(data)


async def _item_requests(job_id: str, outputs: list[JobOutput]) -> AsyncIterator[worker_pb2.RegisterOutputsRequest]:
    """The items, each file's bytes, commit."""
    items = []
    for index, output in enumerate(outputs):
        when = timestamp_pb2.Timestamp()
        when.FromDatetime(output.datetime)
        assets = []
        for file in output.files:
            size, sha = await asyncio.to_thread(size_and_sha256, file.path)
            assets.append(
                worker_pb2.OutputAsset(key=file.key, roles=file.roles, title=file.title, size_bytes=size, sha256=sha)
            )
        items.append(
            worker_pb2.OutputItem(
                output_key=str(index),
                name=output.name,
                geometry=struct(output.geometry),
                datetime=when,
                properties=struct(output.properties),
                source_item_ids=output.source_item_ids,
                assets=assets,
            )
        )
    first = True
    for item in items:
        yield worker_pb2.RegisterOutputsRequest(job_id=job_id if first else "", item=item)
        first = False
    for index, output in enumerate(outputs):
        for file in output.files:
            async for chunk in _file_chunks(file.path, output_key=str(index), asset_key=file.key):
                yield worker_pb2.RegisterOutputsRequest(job_id=job_id if first else "", chunk=chunk)
                first = False
    yield worker_pb2.RegisterOutputsRequest(job_id=job_id, commit=True)


async def _answer_requests(job_id: str, answer: AnalyticsAnswer) -> AsyncIterator[worker_pb2.RegisterOutputsRequest]:
    """An analytics job's result, each file (declared, then its bytes), commit."""
    result = worker_pb2.AnalyticsJobResult(operation=answer.operation, result=struct(answer.result))
    yield worker_pb2.RegisterOutputsRequest(job_id=job_id, analytics_result=result)
    for file in answer.files:
        size, sha = await asyncio.to_thread(size_and_sha256, file.path)
        artifact = worker_pb2.OutputArtifact(
            key=file.key, media_type=file.media_type, title=file.title, size_bytes=size, sha256=sha
        )
        yield worker_pb2.RegisterOutputsRequest(artifact=artifact)
        async for chunk in _file_chunks(file.path, artifact_key=file.key):
            yield worker_pb2.RegisterOutputsRequest(chunk=chunk)
    yield worker_pb2.RegisterOutputsRequest(job_id=job_id, commit=True)


async def register_outputs(stub: Any, job_id: str, metadata: Any, outputs: list[JobOutput] | AnalyticsAnswer) -> None:
    """The job's outputs over one RegisterOutputs stream: its items and their files, or an
    analytics job's answer and its files."""

    def requests() -> AsyncIterator[worker_pb2.RegisterOutputsRequest]:
        if isinstance(outputs, AnalyticsAnswer):
            return _answer_requests(job_id, outputs)
        return _item_requests(job_id, outputs)

    # A resend after a lost response replays the first one (same attempt).
    await resending(lambda: stub.RegisterOutputs(requests(), metadata=metadata, timeout=600))


async def resending(call: Any) -> Any:
    """`call()`, made again while the server is unreachable (RESEND_CODES, a
    broken-off upload) for up to RESEND_SECONDS, with jittered backoff."""
    deadline = time.monotonic() + RESEND_SECONDS
    delay = 0.25
    while True:
        try:
            return await call()
        except aio.AioRpcError as err:
            again = err.code() in RESEND_CODES or error_reason(err) == "INCOMPLETE_UPLOAD"
            if not again or time.monotonic() + delay > deadline:
                raise
            log.info("%s %s; sending again in %.1f s", err.code().name, err.details(), delay)
        await asyncio.sleep(delay * random.uniform(0.8, 1.2))
        delay = min(delay * 2, 5.0)


def error_reason(err: aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call (`OUTPUT_NAME_TAKEN`...), else its code's name."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # a malformed trailer still leaves the code
                break
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    if info.reason:
                        return info.reason
    code = err.code()
    return code.name if code is not None else "UNKNOWN"


class ProgressReporter:
    """Forwards the plugin's progress to the server, at most every
    PROGRESS_INTERVAL_SECONDS, and learns of cancellation from the replies."""

    def __init__(self, stub: Any, job_id: str, metadata: Any, cancel: Any) -> None:
        self._stub = stub
        self._job_id = job_id
        self._metadata = metadata
        self._cancel = cancel
        self._latest: tuple[float, str] | None = None
        self._sent: tuple[float, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()

    def threadsafe(self, loop: asyncio.AbstractEventLoop) -> Callable[[float, str], None]:
        def report(fraction: float, message: str) -> None:
            loop.call_soon_threadsafe(self._update, fraction, message)

        return report

    def _update(self, fraction: float, message: str) -> None:
        self._latest = (fraction, message)
        self._changed.set()

    def start(self, first: tuple[float, str] | None = None) -> None:
        if first is not None:
            self._update(*first)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Let an in-flight report finish, then send the latest unsent one."""
        if self._task is not None:
            self._stopping.set()
            self._changed.set()
            await self._task
            self._task = None
        if self._latest is not None and self._latest != self._sent:
            await self.send(*self._latest)

    async def send(self, fraction: float, message: str) -> None:
        self._sent = (fraction, message)
        try:
            reply = await self._stub.ReportProgress(
                worker_pb2.ReportProgressRequest(job_id=self._job_id, progress=fraction, message=message),
                metadata=self._metadata,
                timeout=30,
            )
            if reply.cancel_requested:
                self._cancel.set()
        except aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                self._cancel.set()  # our attempt is over: stop working on it
            else:
                log.warning("progress report for %s failed: %s", self._job_id, err.code().name)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            await self._changed.wait()
            self._changed.clear()
            if self._stopping.is_set():
                return
            if self._latest is not None and self._latest != self._sent:
                started = time.monotonic()
                await self.send(*self._latest)
                pause = PROGRESS_INTERVAL_SECONDS - (time.monotonic() - started)
                with contextlib.suppress(TimeoutError):  # a stop ends the pause early
                    await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, pause))
