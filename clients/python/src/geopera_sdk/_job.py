"""What the job handles of both clients share: the snapshot, its attributes and
the `wait` display. The handles themselves (`AsyncJob`, `Job`) live with their
client (`_aio.py`, `_client.py`), so that this module needs neither."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.message import Message
from google.rpc import error_details_pb2

from geopera.v1 import resources_pb2
from geopera_sdk._convert import TERMINAL_STATUSES, job_status_name
from geopera_sdk._progress import Bar, open_bar

JobProgress = bool | Callable[[resources_pb2.Job], Any]
# How many of a failed job's last error records `wait()` keeps for its error.
LAST_ERROR_LOGS = 10


def job_error_reason(job: resources_pb2.Job) -> str:
    """The ErrorInfo reason of a job's `error`, or ""."""
    for detail in job.error.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def log_level(value: int | str | None) -> int:
    """`"error"`, `"LOG_LEVEL_ERROR"` or a `LogLevel` number -> the number (None: 0, every level)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    name = value.upper()
    name = name if name.startswith("LOG_LEVEL_") else f"LOG_LEVEL_{name}"
    try:
        return int(resources_pb2.LogLevel.Value(name))
    except ValueError:
        known = [n.removeprefix("LOG_LEVEL_").lower() for n in resources_pb2.LogLevel.keys()][1:]
        raise ValueError(f"unknown log level {value!r}; one of {known}") from None


class _JobBase:
    """Attribute access falls through to the `geopera.v1.Job` snapshot
    (`job.status`, `job.progress`, `job.output_item_ids`, ...)."""

    proto: resources_pb2.Job
    result: Message | None

    def __init__(self, proto: resources_pb2.Job, result: Message | None = None) -> None:
        self.proto = proto
        # The result message of the call that returned this handle (e.g.
        # ClipCreateFromItemResult with `assets_to_clip`), when there was one.
        self.result = result

    @property
    def id(self) -> str:
        return self.proto.id

    @property
    def status(self) -> int:
        """The `geopera.v1.JobStatus` number; see `status_name`."""
        return self.proto.status

    @property
    def status_name(self) -> str:
        """`PENDING`, `DISPATCHED`, `RUNNING`, `SUCCEEDED`, `FAILED` or `CANCELLED`."""
        return job_status_name(self.proto.status)

    @property
    def terminal(self) -> bool:
        return self.proto.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.proto.status == resources_pb2.JOB_STATUS_SUCCEEDED

    @property
    def estimate(self) -> resources_pb2.CostEstimate | None:
        """The price of the spend that returned this handle (its hold; after a
        `validate_only=True` call, what it would hold), if one did."""
        if self.result is not None and "estimate" in self.result.DESCRIPTOR.fields_by_name:
            if self.result.HasField("estimate"):
                estimate: resources_pb2.CostEstimate = getattr(self.result, "estimate")  # noqa: B009
                return estimate
        return None

    @property
    def dispatch_result(self) -> resources_pb2.DispatchResult | None:
        """The dispatch outcome of the call that returned this handle, if it dispatched."""
        if self.result is not None and "dispatch" in self.result.DESCRIPTOR.fields_by_name:
            if self.result.HasField("dispatch"):
                # A result type with a dispatch field (its descriptor says so, above); `result` is
                # typed as any message.
                return self.result.dispatch  # type: ignore[attr-defined,no-any-return]
        return None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("proto", "result"):
            raise AttributeError(name)
        return getattr(self.proto, name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _JobBase) and other.proto == self.proto

    # Unhashable, as equality compares the mutable proto (Python's idiom; typeshed types
    # __hash__ as a method).
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(id={self.id!r}, job_type_id={self.proto.job_type_id!r}, "
            f"status={self.status_name}, progress={self.proto.progress:.2f})"
        )


class _WaitDisplay:
    """What `wait(progress=...)` shows: a bar on a terminal with the status and the time
    waited (`RUNNING 0:01:05`), or a callback."""

    def __init__(self, job_id: str, progress: JobProgress) -> None:
        self._callback: Callable[[resources_pb2.Job], Any] | None = None
        self._bar: Bar | None = None
        self._started = time.monotonic()
        if callable(progress) and not isinstance(progress, bool):
            self._callback = progress
        elif progress:
            self._bar = open_bar(True, total=1.0, desc=job_id, unit="%")

    def show(self, job: resources_pb2.Job) -> None:
        if self._callback is not None:
            self._callback(job)
        elif self._bar is not None:
            done = 1.0 if job.status == resources_pb2.JOB_STATUS_SUCCEEDED else job.progress
            elapsed = int(time.monotonic() - self._started)
            clock = f"{elapsed // 3600}:{elapsed % 3600 // 60:02d}:{elapsed % 60:02d}"
            self._bar.update(done, f"{job_status_name(job.status)} {clock}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _BatchDisplay:
    """What `wait_all(progress=...)` shows: one combined bar over every job
    (each counts its progress, an ended one 1), or a callback per snapshot."""

    def __init__(self, total: int, progress: JobProgress) -> None:
        self._callback: Callable[[resources_pb2.Job], Any] | None = None
        self._bar: Bar | None = None
        if callable(progress) and not isinstance(progress, bool):
            self._callback = progress
        elif progress:
            self._bar = open_bar(True, total=float(total), desc=f"{total} jobs", unit="jobs")

    def show(self, jobs: Sequence[Any], job: resources_pb2.Job) -> None:
        if self._callback is not None:
            self._callback(job)
            return
        if self._bar is None:
            return
        ended = [j.proto for j in jobs if j.proto.status in TERMINAL_STATUSES]
        failed = sum(j.status != resources_pb2.JOB_STATUS_SUCCEEDED for j in ended)
        done = len(ended) + sum(j.proto.progress for j in jobs if j.proto.status not in TERMINAL_STATUSES)
        note = f"{len(ended)}/{len(jobs)} ended" + (f", {failed} not succeeded" if failed else "")
        self._bar.update(done, note)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
