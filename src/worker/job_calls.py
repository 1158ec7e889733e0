"""The worker's calls back to the server for one job, with its job token: source downloads,
progress reports (which also bring cancellation), and the outputs' upload; and how a call
the server may not have received is sent again. With object storage, source and output
bytes go straight between the worker and the bucket by presigned URLs.
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

import aiohttp
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


async def download_asset(
    kernel: Any, href: str, target: Path, metadata: Any, *, url: str = "", sha256: str = ""
) -> Path:
    """A source asset written to ``target``, its sha256 checked: from ``url`` (a presigned
    GET on the server's object storage) when given, else streamed over DownloadAsset."""
    digest = hashlib.sha256()
    expected = sha256
    with target.open("wb") as out:
        if url:
            async for data in _http_get(url, href):
                digest.update(data)
                await asyncio.to_thread(out.write, data)
        else:
            request = kernel_pb2.DownloadAssetRequest(resource_name=href)
            async for chunk in kernel.DownloadAsset(request, metadata=metadata):
                if chunk.sha256:
                    expected = chunk.sha256
                digest.update(chunk.data)
                await asyncio.to_thread(out.write, chunk.data)
    if expected and digest.hexdigest() != expected:
        raise JobFailed("SOURCE_CORRUPT", f"downloaded {href} does not match its checksum", retryable=True)
    return target


async def _http_get(url: str, name: str) -> AsyncIterator[bytes]:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        if response.status != 200:
            # An expired or refused URL: the next attempt gets fresh ones.
            raise JobFailed(
                "SOURCE_UNAVAILABLE", f"object storage answered {response.status} for {name}", retryable=True
            )
        async for data in response.content.iter_chunked(CHUNK_BYTES):
            yield data


async def _upload_files(stub: Any, job_id: str, metadata: Any, outputs: list[JobOutput]) -> dict[tuple[int, str], str]:
    """Each output file PUT to object storage by a presigned URL; their hrefs."""
    files = [worker_pb2.OutputUploadTarget(output_key=str(i), asset_key=f.key)
             for i, output in enumerate(outputs) for f in output.files]  # fmt: skip
    if not files:
        return {}
    request = worker_pb2.SignOutputUploadsRequest(job_id=job_id, files=files)
    signed = await resending(lambda: stub.SignOutputUploads(request, metadata=metadata, timeout=30))
    paths = {(str(i), f.key): f.path for i, output in enumerate(outputs) for f in output.files}
    hrefs = {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for upload in signed.uploads:
            path = paths[(upload.output_key, upload.asset_key)]
            with path.open("rb") as body:
                headers = {"Content-Length": str(path.stat().st_size)}
                async with session.put(upload.url, data=body, headers=headers) as response:
                    if response.status not in (200, 201, 204):
                        text = (await response.text())[:300]
                        raise JobFailed("OUTPUT_UPLOAD_FAILED", f"object storage answered {response.status}: {text}",
                                        retryable=True)  # fmt: skip
            hrefs[(int(upload.output_key), upload.asset_key)] = upload.href
    return hrefs


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


async def _item_requests(
    job_id: str, outputs: list[JobOutput], hrefs: dict[tuple[int, str], str]
) -> AsyncIterator[worker_pb2.RegisterOutputsRequest]:
    """The items, each file's bytes (unless uploaded already: `hrefs`), commit."""
    items = []
    for index, output in enumerate(outputs):
        when = timestamp_pb2.Timestamp()
        when.FromDatetime(output.datetime)
        assets = []
        for file in output.files:
            size, sha = await asyncio.to_thread(size_and_sha256, file.path)
            assets.append(
                worker_pb2.OutputAsset(
                    key=file.key,
                    roles=file.roles,
                    title=file.title,
                    size_bytes=size,
                    sha256=sha,
                    href=hrefs.get((index, file.key), ""),
                )
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
            if (index, file.key) in hrefs:
                continue
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


async def register_outputs(
    stub: Any, job_id: str, metadata: Any, outputs: list[JobOutput] | AnalyticsAnswer, *, presigned: bool = False
) -> None:
    """The job's outputs over one RegisterOutputs stream: its items and their files, or an
    analytics job's answer and its files. With ``presigned`` (object storage) the items'
    files go to the bucket first and the stream names them (`OutputAsset.href`) instead
    of carrying their bytes; an analytics answer's files always travel in the stream."""
    hrefs = {}
    if presigned and not isinstance(outputs, AnalyticsAnswer):
        hrefs = await _upload_files(stub, job_id, metadata, outputs)

    def requests() -> AsyncIterator[worker_pb2.RegisterOutputsRequest]:
        if isinstance(outputs, AnalyticsAnswer):
            return _answer_requests(job_id, outputs)
        return _item_requests(job_id, outputs, hrefs)

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
