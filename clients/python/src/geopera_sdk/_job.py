"""Job handles: the latest snapshot of a job plus the calls that act on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from geopera.v1 import kernel_pb2, resources_pb2
from geopera_sdk._convert import TERMINAL_STATUSES, job_status_name
from geopera_sdk._progress import Bar, open_bar

if TYPE_CHECKING:
    from geopera_sdk._aio import AsyncClient
    from geopera_sdk._client import Client

JobProgress = bool | Callable[[resources_pb2.Job], Any]


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
    def dispatch_result(self) -> resources_pb2.DispatchResult | None:
        """The dispatch outcome of the call that returned this handle, if it dispatched."""
        if self.result is not None and "dispatch" in self.result.DESCRIPTOR.fields_by_name:
            if self.result.HasField("dispatch"):
                return self.result.dispatch  # type: ignore[attr-defined,no-any-return]
        return None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("proto", "result"):
            raise AttributeError(name)
        return getattr(self.proto, name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _JobBase) and other.proto == self.proto

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(id={self.id!r}, job_type_id={self.proto.job_type_id!r}, "
            f"status={self.status_name}, progress={self.proto.progress:.2f})"
        )


class _WaitDisplay:
    """What `wait(progress=...)` shows: a bar on a terminal, or a callback."""

    def __init__(self, job_id: str, progress: JobProgress) -> None:
        self._callback: Callable[[resources_pb2.Job], Any] | None = None
        self._bar: Bar | None = None
        if callable(progress) and not isinstance(progress, bool):
            self._callback = progress
        elif progress:
            self._bar = open_bar(True, total=1.0, desc=job_id, unit="%")

    def show(self, job: resources_pb2.Job) -> None:
        if self._callback is not None:
            self._callback(job)
        elif self._bar is not None:
            done = 1.0 if job.status == resources_pb2.JOB_STATUS_SUCCEEDED else job.progress
            self._bar.update(done, job_status_name(job.status))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Job(_JobBase):
    """A job of a synchronous `Client`."""

    def __init__(self, client: Client, proto: resources_pb2.Job, result: Message | None = None) -> None:
        super().__init__(proto, result)
        self._client = client

    def refresh(self) -> Job:
        """Fetch the latest snapshot (`processing.jobs.get`)."""
        self.proto = self._client.jobs.get(self.id).proto
        return self

    def cancel(self, reason: str = "") -> Job:
        """Cancel the job (`processing.jobs.cancel`); its held credits are released."""
        self.proto = self._client.jobs.cancel(self.id, reason=reason).proto
        return self

    def dispatch(self, *, idempotency_key: str | None = None) -> Job:
        """Dispatch a PENDING job (`processing.dispatch`)."""
        dispatched = self._client.jobs.dispatch(self.id, idempotency_key=idempotency_key)
        self.proto, self.result = dispatched.proto, dispatched.result
        return self

    def watch(self, *, after_sequence: int = 0, timeout: float | None = None) -> Iterator[kernel_pb2.WatchJobResponse]:
        """The job's events (see `Jobs.watch`); each one updates this handle."""
        for event in self._client.jobs.watch(self.id, after_sequence=after_sequence, timeout=timeout):
            self.proto = event.job
            yield event

    def wait(self, timeout: float | None = None, progress: JobProgress = False) -> Job:
        """Watch until the job ends and return this handle (any terminal status:
        check `succeeded`). `progress=True` draws a bar on stderr when it is a
        terminal; a callable gets every snapshot. `timeout` (seconds) raises
        `DeadlineExceeded` (a `TimeoutError`)."""
        display = _WaitDisplay(self.id, progress)
        try:
            for event in self._client.jobs.watch(self.id, timeout=timeout):
                self.proto = event.job
                display.show(event.job)
        finally:
            display.close()
        return self


class AsyncJob(_JobBase):
    """A job of an `AsyncClient`; the same surface with coroutines."""

    def __init__(self, client: AsyncClient, proto: resources_pb2.Job, result: Message | None = None) -> None:
        super().__init__(proto, result)
        self._client = client

    async def refresh(self) -> AsyncJob:
        self.proto = (await self._client.jobs.get(self.id)).proto
        return self

    async def cancel(self, reason: str = "") -> AsyncJob:
        self.proto = (await self._client.jobs.cancel(self.id, reason=reason)).proto
        return self

    async def dispatch(self, *, idempotency_key: str | None = None) -> AsyncJob:
        dispatched = await self._client.jobs.dispatch(self.id, idempotency_key=idempotency_key)
        self.proto, self.result = dispatched.proto, dispatched.result
        return self

    async def watch(
        self,
        *,
        after_sequence: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline, as in Job)
    ) -> AsyncIterator[kernel_pb2.WatchJobResponse]:
        async for event in self._client.jobs.watch(self.id, after_sequence=after_sequence, timeout=timeout):
            self.proto = event.job
            yield event

    async def wait(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline, as in Job)
        progress: JobProgress = False,
    ) -> AsyncJob:
        display = _WaitDisplay(self.id, progress)
        try:
            async for event in self._client.jobs.watch(self.id, timeout=timeout):
                self.proto = event.job
                display.show(event.job)
        finally:
            display.close()
        return self
