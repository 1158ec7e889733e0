"""A job's log records: what its plugin (and the runtime, for that job) logs through the
standard `logging` module, captured per job and sent to the server with WriteJobLogs.

One handler sits on the root logger while any job runs. It files a record under the job
whose capture is current in the `contextvars` context that logged it: the job's task and
the thread its plugin runs in (`asyncio.to_thread` copies the context), so jobs running at
once never mix. Threads a plugin starts itself log into the job only when started in a
copy of the context (`contextvars.copy_context().run`). Records go through the loggers'
own levels as usual (the worker's `--log-level`).

Each job's buffer is bounded: when the server is slower than the plugin, the oldest
unsent records give way and one record says how many were dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2
from grpc import aio

from geopera.v1 import resources_pb2, worker_pb2

log = logging.getLogger("geopera.worker.job_logs")

MAX_BUFFERED = 5_000
BATCH = 500  # the server's limit per call
SEND_INTERVAL_SECONDS = 0.5
# LogRecord attributes that are not `extra` fields.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

_current: contextvars.ContextVar[JobLogBuffer | None] = contextvars.ContextVar("geopera_job_log", default=None)


def log_level(levelno: int) -> int:
    """A Python logging level as a geopera.v1.LogLevel number."""
    if levelno <= logging.DEBUG:
        return resources_pb2.LOG_LEVEL_DEBUG
    if levelno <= logging.INFO:
        return resources_pb2.LOG_LEVEL_INFO
    if levelno <= logging.WARNING:
        return resources_pb2.LOG_LEVEL_WARNING
    if levelno <= logging.ERROR:
        return resources_pb2.LOG_LEVEL_ERROR
    return resources_pb2.LOG_LEVEL_CRITICAL


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)  # NaN would cost the record all its fields on the server
        return value
    except (TypeError, ValueError):
        return repr(value)


def log_record(record: logging.LogRecord, message: str) -> worker_pb2.JobLogRecord:
    fields = struct_pb2.Struct()
    extra = {k: _jsonable(v) for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
    if "\\u0000" in json.dumps(extra, default=str):  # the server refuses NUL in any text
        extra = {"fields_dropped": True}
    with contextlib.suppress(TypeError, ValueError):  # a value a Struct cannot hold: no fields
        fields.update({"logger": record.name, **extra})
    when = timestamp_pb2.Timestamp()
    when.FromNanoseconds(int(record.created * 1e9))
    message = message.replace("\x00", "")
    return worker_pb2.JobLogRecord(log_time=when, level=log_level(record.levelno), message=message, fields=fields)  # type: ignore[arg-type]


class JobLogBuffer:
    """The unsent records of one job; filled from any thread, drained by its sender."""

    def __init__(self, max_records: int = MAX_BUFFERED) -> None:
        self._records: collections.deque[worker_pb2.JobLogRecord] = collections.deque(maxlen=max_records)
        self._lock = threading.Lock()
        self.dropped = 0
        self.added = threading.Event()

    def add(self, record: worker_pb2.JobLogRecord) -> None:
        with self._lock:
            if len(self._records) == self._records.maxlen:
                self.dropped += 1
            self._records.append(record)
        self.added.set()

    def take(self, limit: int) -> list[worker_pb2.JobLogRecord]:
        with self._lock:
            batch = [self._records.popleft() for _ in range(min(limit, len(self._records)))]
            if self.dropped and len(batch) < limit:
                note = logging.makeLogRecord(
                    {"name": log.name, "levelno": logging.WARNING, "dropped_records": self.dropped}
                )
                batch.append(log_record(note, f"{self.dropped} log records dropped by the worker (buffer full)"))
                self.dropped = 0
            if not self._records:
                self.added.clear()
            return batch


class _JobLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        buffer = _current.get()
        if buffer is None or record.name == log.name:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            buffer.add(log_record(record, message))
        except Exception:  # never let a bad log call break the job
            self.handleError(record)


class _Installed:
    lock = threading.Lock()
    users = 0
    handler = _JobLogHandler()


@contextlib.contextmanager
def capturing(buffer: JobLogBuffer) -> Iterator[None]:
    """Within: records logged in this context (and threads started by asyncio.to_thread
    from it) go to `buffer`."""
    with _Installed.lock:
        if _Installed.users == 0:
            logging.getLogger().addHandler(_Installed.handler)
        _Installed.users += 1
    token = _current.set(buffer)
    try:
        yield
    finally:
        _current.reset(token)
        with _Installed.lock:
            _Installed.users -= 1
            if _Installed.users == 0:
                logging.getLogger().removeHandler(_Installed.handler)


class JobLogSender:
    """Sends a job's buffered records every SEND_INTERVAL_SECONDS; the runtime `flush()`es
    the rest before it reports the job's end (so the records come before the terminal
    event: after it, the attempt is over and the server takes no more)."""

    def __init__(self, stub: Any, job_id: str, metadata: Any, buffer: JobLogBuffer) -> None:
        self._stub, self._job_id, self._metadata, self.buffer = stub, job_id, metadata, buffer
        self._task: asyncio.Task[None] | None = None
        self._over = False

    def start(self) -> None:
        # In an empty context: the sender's own logging never files into the job.
        self._task = asyncio.get_running_loop().create_task(self._loop(), context=contextvars.Context())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def flush(self) -> None:
        while not self._over and (batch := self.buffer.take(BATCH)):
            await self._send(batch)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(SEND_INTERVAL_SECONDS)
            if self.buffer.added.is_set():
                await self.flush()

    async def _send(self, batch: list[worker_pb2.JobLogRecord]) -> None:
        try:
            await self._stub.WriteJobLogs(
                worker_pb2.WriteJobLogsRequest(job_id=self._job_id, records=batch), metadata=self._metadata, timeout=30
            )
        except aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                self._over = True  # the attempt is over: nothing more is accepted
            else:
                log.warning("job %s: %d log records not sent: %s", self._job_id, len(batch), err.code().name)
