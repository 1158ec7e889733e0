"""The synchronous client."""

from __future__ import annotations

import builtins
import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

import grpc
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from geopera.v1 import (
    analytics_pb2,
    catalog_pb2,
    credits_pb2,
    kernel_pb2,
    kernel_pb2_grpc,
    processing_pb2,
    resources_pb2,
)
from geopera_sdk._analytics import AnalyticsResult, MethodSpec, make_method
from geopera_sdk._base import (
    Settings,
    channel_options,
    execute_request,
    new_idempotency_key,
    paginate,
    unpack_result,
)
from geopera_sdk._convert import (
    TERMINAL_STATUSES,
    asset_input,
    is_safe_to_repeat,
    is_spend,
    job_status,
    strings,
    to_struct,
    to_timestamp,
)
from geopera_sdk._errors import GeoperaError, Unavailable, error_from_rpc
from geopera_sdk._job import Job, JobProgress
from geopera_sdk._progress import open_bar
from geopera_sdk._retry import Attempts, RetryPolicy
from geopera_sdk._transfer import DownloadResult, DownloadSink, MiB, Source, Target, UploadSource, resource_name

Params = Message | Mapping[str, Any] | None
When = dt.datetime | str


class Client:
    """A synchronous client of the Geopera kernel.

    ``Client("127.0.0.1:50051", token)``: `target` is any gRPC target
    (`host:port`, `dns:///host:port`, `ipv4:a:p1,b:p2` for several replicas).
    `timeout` is the deadline of one attempt of a unary call; `retries` a
    `RetryPolicy` or a number of retries (UNAVAILABLE only; 0 disables).
    Pass `credentials` (e.g. `grpc.ssl_channel_credentials()`) for TLS.
    """

    def __init__(
        self,
        target: str,
        token: str | None,
        *,
        timeout: float | None = 30.0,
        retries: int | RetryPolicy | None = RetryPolicy(),  # noqa: B008 (immutable)
        credentials: grpc.ChannelCredentials | None = None,
        options: Iterable[tuple[str, Any]] | None = None,
        metadata: Iterable[tuple[str, str]] | None = None,
    ) -> None:
        self.target = target
        self._settings = Settings(token, timeout, retries, metadata)
        opts = channel_options(options)
        if credentials is not None:
            self._channel = grpc.secure_channel(target, credentials, options=opts)
        else:
            self._channel = grpc.insecure_channel(target, options=opts)
        self._stub = kernel_pb2_grpc.KernelServiceStub(self._channel)
        self.items = Items(self)
        self.projects = Projects(self)
        self.credits = Credits(self)
        self.jobs = Jobs(self)
        self.job_types = JobTypes(self)
        self.workers = Workers(self)
        self.analytics = Analytics(self)

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._settings.retry_policy

    @property
    def timeout(self) -> float | None:
        return self._settings.timeout

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r})"

    # -- the generic call --------------------------------------------------

    def execute(
        self,
        operation: str,
        params: Params = None,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Run one operation: `params` is its params message or a dict (proto3
        JSON names) parsed into it; returns its result message. Spend
        operations get an `idempotency-key` (yours, or a fresh one) that every
        retry of this call reuses."""
        request = execute_request(operation, params)
        if idempotency_key is None and is_spend(operation):
            idempotency_key = new_idempotency_key()
        metadata = self._settings.metadata(idempotency_key)
        attempts = Attempts(self.retry_policy)
        per_attempt = self.timeout if timeout is None else timeout
        safe = is_safe_to_repeat(operation)
        while True:
            try:
                response = self._stub.Execute(request, metadata=metadata, timeout=attempts.attempt_timeout(per_attempt))
                return unpack_result(operation, response)
            except grpc.RpcError as err:
                error = error_from_rpc(err)
            delay = attempts.next_delay(error, safe=safe)
            if delay is None:
                raise error
            time.sleep(delay)

    def _run(self, operation: str, params: Message, **kwargs: Any) -> Any:
        return self.execute(operation, params, **kwargs)

    # -- processing shortcuts ---------------------------------------------

    def clip(
        self,
        source_item_id: str,
        aoi_geometry: Mapping[str, Any] | struct_pb2.Struct,
        *,
        project_id: str | None = None,
        asset_keys: Sequence[str] | None = None,
        output_name: str = "",
        target_collection_id: str = "",
        idempotency_key: str | None = None,
    ) -> Job:
        """`clip.create_from_item`: clip a source item's rasters to an AOI (GeoJSON)
        as a new item; returns the dispatched job. `project_id` defaults to the
        source item's project."""
        if project_id is None:
            project_id = self.items.get(source_item_id).project_id
        result = self._run(
            "clip.create_from_item",
            processing_pb2.ClipCreateFromItemParams(
                source_item_id=source_item_id,
                project_id=project_id,
                aoi_geometry=to_struct(aoi_geometry),
                asset_keys=strings(asset_keys),
                output_name=output_name,
                target_collection_id=target_collection_id,
            ),
            idempotency_key=idempotency_key,
        )
        return Job(self, result.job, result)

    # -- bytes ---------------------------------------------------------------

    def upload(
        self,
        project_id: str,
        source: Source,
        *,
        file_name: str | None = None,
        chunk_size: int = MiB,
        progress: bool | Callable[[float, float], Any] = False,
        timeout: float | None = None,
    ) -> str:
        """Upload a file (path, bytes or seekable binary file) with `UploadAsset`
        for a later `items.create`; returns the upload id. The size and SHA-256
        are sent, so the server refuses anything that arrived damaged. A dropped
        upload starts again (a new upload; the old one expires)."""
        src = UploadSource(source, file_name, chunk_size)
        bar = open_bar(progress, total=src.size, desc=src.file_name, unit="B")
        attempts = Attempts(self.retry_policy, timeout, stream=True)
        try:
            while True:
                try:
                    response = self._stub.UploadAsset(
                        src.requests(project_id, bar.update),
                        metadata=self._settings.metadata(),
                        timeout=attempts.remaining(),
                    )
                    return src.check(response)
                except grpc.RpcError as err:
                    error = error_from_rpc(err)
                delay = attempts.next_delay(error, safe=True)
                if delay is None:
                    raise error
                time.sleep(delay)
        finally:
            bar.close()

    def download(
        self,
        target: Target,
        dest: str | os.PathLike[str] | IO[bytes],
        *,
        progress: bool | Callable[[float, float], Any] = False,
        timeout: float | None = None,
    ) -> DownloadResult:
        """Download an item asset or an analytics artifact (`href` string,
        `Asset` or `Artifact`) to a path (written as `<dest>.part`, renamed
        when complete) or a binary file. A dropped stream resumes at the bytes
        already received (`read_offset`); the SHA-256 is verified
        (`ChecksumMismatch`)."""
        name, expected = resource_name(target)
        sink = DownloadSink(name, dest, expected)
        bar = None
        attempts = Attempts(self.retry_policy, timeout, stream=True)
        try:
            while True:
                try:
                    first = True
                    call = self._stub.DownloadAsset(
                        sink.request(), metadata=self._settings.metadata(), timeout=attempts.remaining()
                    )
                    for message in call:
                        sink.accept(message, first)
                        if first:
                            first = False
                            if bar is None:
                                bar = open_bar(progress, total=sink.total or 0, desc=name, unit="B")
                        bar.update(sink.offset)
                        attempts.progressed()
                    if sink.complete:
                        return sink.finish()
                    error: GeoperaError = Unavailable("the download ended early", reason="STREAM_ENDED")
                except grpc.RpcError as err:
                    error = error_from_rpc(err)
                delay = attempts.next_delay(error, safe=True)
                if delay is None:
                    raise error
                sink.resumes += 1
                time.sleep(delay)
        except BaseException:
            sink.abort()
            raise
        finally:
            if bar is not None:
                bar.close()


class _Namespace:
    def __init__(self, client: Client) -> None:
        self._client = client

    def _run(self, operation: str, params: Message, **kwargs: Any) -> Any:
        return self._client.execute(operation, params, **kwargs)


def _page_size(value: int | None) -> int:
    return value or 0


class Items(_Namespace):
    """Catalog items (`items.*`)."""

    def get(self, item_id: str) -> resources_pb2.Item:
        """`items.get`: one item with its assets."""
        return self._run("items.get", catalog_pb2.ItemsGetParams(item_id=item_id)).item  # type: ignore[no-any-return]

    def list(
        self,
        project_id: str,
        *,
        collection_id: str | None = None,
        bbox: Sequence[float] | None = None,
        datetime_start: When | None = None,
        datetime_end: When | None = None,
        intersects: Mapping[str, Any] | struct_pb2.Struct | None = None,
        page_size: int | None = None,
        max_items: int | None = None,
    ) -> Iterator[resources_pb2.Item]:
        """`items.list`: a project's items ordered by (datetime, id), page by page
        (`page_size` per call) up to `max_items` in all."""
        params = catalog_pb2.ItemsListParams(
            project_id=project_id,
            collection_id=collection_id or "",
            bbox=list(bbox or ()),
            page_size=_page_size(page_size),
        )
        if datetime_start is not None:
            params.datetime_start.CopyFrom(to_timestamp(datetime_start))
        if datetime_end is not None:
            params.datetime_end.CopyFrom(to_timestamp(datetime_end))
        if intersects is not None:
            params.intersects.CopyFrom(to_struct(intersects))

        def fetch(token: str) -> tuple[Sequence[resources_pb2.Item], str]:
            params.page_token = token
            page = self._run("items.list", params)
            return page.items, page.next_page_token

        return paginate(fetch, max_items)

    def create(
        self,
        project_id: str,
        name: str,
        assets: Iterable[catalog_pb2.AssetInput | Mapping[str, Any]],
        *,
        collection_id: str | None = None,
        datetime: When | None = None,
        properties: Mapping[str, Any] | None = None,
        convert_to_cog: bool = False,
    ) -> resources_pb2.Item:
        """`items.create`: register a raster item from uploads (`upload_id`) or,
        for admins, server paths (`server_href`)."""
        params = catalog_pb2.ItemsCreateParams(
            project_id=project_id,
            collection_id=collection_id or "",
            name=name,
            assets=[asset_input(a) for a in assets],
            convert_to_cog=convert_to_cog,
        )
        if datetime is not None:
            params.datetime.CopyFrom(to_timestamp(datetime))
        if properties:
            params.properties.CopyFrom(to_struct(properties))
        return self._run("items.create", params).item  # type: ignore[no-any-return]

    def register_file(
        self,
        project_id: str,
        name: str,
        path: Source,
        *,
        collection_id: str | None = None,
        convert_to_cog: bool = False,
        datetime: When | None = None,
        properties: Mapping[str, Any] | None = None,
        asset_key: str = "data",
        title: str = "",
        roles: Sequence[str] | None = None,
        progress: bool | Callable[[float, float], Any] = False,
    ) -> resources_pb2.Item:
        """Upload a raster file and register it as an item (`upload` + `items.create`)."""
        upload_id = self._client.upload(project_id, path, progress=progress)
        asset = catalog_pb2.AssetInput(key=asset_key, upload_id=upload_id, roles=strings(roles), title=title)
        return self.create(
            project_id,
            name,
            [asset],
            collection_id=collection_id,
            datetime=datetime,
            properties=properties,
            convert_to_cog=convert_to_cog,
        )

    def lineage(self, item_id: str, *, direction: str = "", max_depth: int = 0) -> catalog_pb2.ItemsLineageResult:
        """`items.lineage`: the provenance graph (`nodes`, `edges`) around an item;
        `direction` is `upstream`, `downstream` or `both` (default)."""
        params = catalog_pb2.ItemsLineageParams(item_id=item_id, direction=direction, max_depth=max_depth)
        return self._run("items.lineage", params)  # type: ignore[no-any-return]


class Projects(_Namespace):
    """Projects (`projects.*`)."""

    def get(self, project_id: str) -> resources_pb2.Project:
        return self._run("projects.get", catalog_pb2.ProjectsGetParams(project_id=project_id)).project  # type: ignore[no-any-return]

    def list(self, *, page_size: int | None = None, max_items: int | None = None) -> Iterator[resources_pb2.Project]:
        """The projects the token belongs to (all of them for admins), by id."""

        def fetch(token: str) -> tuple[Sequence[resources_pb2.Project], str]:
            page = self._run(
                "projects.list", catalog_pb2.ProjectsListParams(page_size=_page_size(page_size), page_token=token)
            )
            return page.projects, page.next_page_token

        return paginate(fetch, max_items)


class Credits(_Namespace):
    """Credits (`credits.*`)."""

    def balance(self, project_id: str) -> resources_pb2.CreditBalance:
        """`credits.balance.get`."""
        params = credits_pb2.CreditsBalanceGetParams(project_id=project_id)
        return self._run("credits.balance.get", params).balance  # type: ignore[no-any-return]

    def ledger(
        self,
        project_id: str,
        *,
        job_id: str | None = None,
        page_size: int | None = None,
        max_items: int | None = None,
    ) -> Iterator[resources_pb2.LedgerEntry]:
        """`credits.ledger.list`: ledger entries, newest first."""

        def fetch(token: str) -> tuple[Sequence[resources_pb2.LedgerEntry], str]:
            params = credits_pb2.CreditsLedgerListParams(
                project_id=project_id, job_id=job_id or "", page_size=_page_size(page_size), page_token=token
            )
            page = self._run("credits.ledger.list", params)
            return page.entries, page.next_page_token

        return paginate(fetch, max_items)


class Jobs(_Namespace):
    """Processing jobs (`processing.*`)."""

    def _job(self, result: Any) -> Job:
        return Job(self._client, result.job, result)

    def create(
        self,
        project_id: str,
        job_type_id: str,
        input_params: Mapping[str, Any] | struct_pb2.Struct | None = None,
        *,
        target_collection_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """`processing.create`: a PENDING job with its credits reserved."""
        params = processing_pb2.ProcessingCreateParams(
            project_id=project_id,
            job_type_id=job_type_id,
            input_params=to_struct(input_params),
            target_collection_id=target_collection_id or "",
        )
        return self._job(self._run("processing.create", params, idempotency_key=idempotency_key))

    def create_and_dispatch(
        self,
        project_id: str,
        job_type_id: str,
        input_params: Mapping[str, Any] | struct_pb2.Struct | None = None,
        *,
        target_collection_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """`processing.create_and_dispatch`: create and queue a job in one transaction."""
        params = processing_pb2.ProcessingCreateAndDispatchParams(
            project_id=project_id,
            job_type_id=job_type_id,
            input_params=to_struct(input_params),
            target_collection_id=target_collection_id or "",
        )
        return self._job(self._run("processing.create_and_dispatch", params, idempotency_key=idempotency_key))

    def dispatch(self, job_id: str, *, idempotency_key: str | None = None) -> Job:
        """`processing.dispatch`: queue a PENDING job for a worker."""
        params = processing_pb2.ProcessingDispatchParams(job_id=job_id)
        return self._job(self._run("processing.dispatch", params, idempotency_key=idempotency_key))

    def get(self, job_id: str) -> Job:
        """`processing.jobs.get`."""
        return self._job(self._run("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job_id)))

    def list(
        self,
        project_id: str,
        *,
        status: int | str | None = None,
        job_type_id: str | None = None,
        create_time_start: When | None = None,
        create_time_end: When | None = None,
        page_size: int | None = None,
        max_items: int | None = None,
    ) -> Iterator[Job]:
        """`processing.jobs.list`: a project's jobs, newest first; `status` is a
        name (`"running"`) or a `JobStatus` number."""
        params = processing_pb2.ProcessingJobsListParams(
            project_id=project_id,
            status=job_status(status) if status is not None else 0,  # type: ignore[arg-type]
            job_type_id=job_type_id or "",
            page_size=_page_size(page_size),
        )
        if create_time_start is not None:
            params.create_time_start.CopyFrom(to_timestamp(create_time_start))
        if create_time_end is not None:
            params.create_time_end.CopyFrom(to_timestamp(create_time_end))

        def fetch(token: str) -> tuple[Sequence[Job], str]:
            params.page_token = token
            page = self._run("processing.jobs.list", params)
            return [Job(self._client, job) for job in page.jobs], page.next_page_token

        return paginate(fetch, max_items)

    def cancel(self, job_id: str, *, reason: str = "") -> Job:
        """`processing.jobs.cancel`: held credits are released."""
        params = processing_pb2.ProcessingJobsCancelParams(job_id=job_id, reason=reason)
        return self._job(self._run("processing.jobs.cancel", params))

    def watch(self, job_id: str, *, after_sequence: int = 0, timeout: float | None = None) -> JobWatch:
        """The job's events (`WatchJob`): a snapshot first, then every change,
        ending after the terminal event. A dropped stream (UNAVAILABLE) is
        resumed transparently with `after_sequence`."""
        return JobWatch(self._client, job_id, after_sequence, timeout)

    def wait(self, job_id: str, *, timeout: float | None = None, progress: JobProgress = False) -> Job:
        """Watch a job until it ends (see `Job.wait`)."""
        return Job(self._client, resources_pb2.Job(id=job_id)).wait(timeout=timeout, progress=progress)


class JobWatch(Iterator[kernel_pb2.WatchJobResponse]):
    """Iterator over a job's events that resumes after dropped streams.
    `resumes` counts the reconnections, `last_sequence` the latest event."""

    def __init__(self, client: Client, job_id: str, after_sequence: int, timeout: float | None) -> None:
        self.job_id = job_id
        self.last_sequence = after_sequence
        self.resumes = 0
        self._client = client
        self._timeout = timeout
        self._call: Any = None
        self._lock = threading.Lock()
        self._events = self._run()

    def __iter__(self) -> JobWatch:
        return self

    def __next__(self) -> kernel_pb2.WatchJobResponse:
        return next(self._events)

    def close(self) -> None:
        """Stop watching (cancels the open stream)."""
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        self._events.close()

    def _run(self) -> Iterator[kernel_pb2.WatchJobResponse]:
        client = self._client
        attempts = Attempts(client.retry_policy, self._timeout, stream=True)
        yielded = False
        while True:
            request = kernel_pb2.WatchJobRequest(job_id=self.job_id, after_sequence=self.last_sequence)
            call = client._stub.WatchJob(request, metadata=client._settings.metadata(), timeout=attempts.remaining())
            with self._lock:
                self._call = call
            received = False
            try:
                for event in call:
                    received = True
                    if yielded and event.sequence <= self.last_sequence:
                        continue  # already seen (never expected; cheap insurance)
                    self.last_sequence = max(self.last_sequence, event.sequence)
                    yielded = True
                    attempts.progressed()
                    yield event
                    if event.job.status in TERMINAL_STATUSES:
                        return
                if not received:
                    return  # the server ends a watch OK only for an ended job: nothing was newer
                error: GeoperaError = Unavailable("the watch ended before the job did", reason="STREAM_ENDED")
            except grpc.RpcError as err:
                error = error_from_rpc(err)
            finally:
                call.cancel()
            if error.reason == "WATCH_IDLE":
                attempts.progressed()  # the server ends quiet watches: resuming them is routine
            delay = attempts.next_delay(error, safe=True)
            if delay is None:
                raise error
            self.resumes += 1
            time.sleep(delay)


class JobTypes(_Namespace):
    """Job types (`processing.job_types.*`)."""

    def list(self) -> builtins.list[resources_pb2.JobType]:
        result = self._run("processing.job_types.list", processing_pb2.ProcessingJobTypesListParams())
        return builtins.list(result.job_types)

    def get(self, job_type_id: str) -> resources_pb2.JobType:
        params = processing_pb2.ProcessingJobTypesGetParams(job_type_id=job_type_id)
        return self._run("processing.job_types.get", params).job_type  # type: ignore[no-any-return]


class Workers(_Namespace):
    """Registered workers (`workers.list`, admin tokens)."""

    def list(self, *, include_disconnected: bool = False) -> builtins.list[resources_pb2.Worker]:
        params = processing_pb2.WorkersListParams(include_disconnected=include_disconnected)
        return builtins.list(self._run("workers.list", params).workers)


class Analytics(_Namespace):
    """Analytics methods (`analytics.*`). Besides `execute(name, ...)`, every
    method the server lists is an attribute (`client.analytics.zonal_stats(...)`)
    with the server's description as docstring and its JSON Schema as
    signature, loaded at first use and cached (`refresh()` reloads)."""

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self._specs: dict[str, MethodSpec] | None = None
        self._methods: dict[str, Any] = {}
        self._lock = threading.Lock()

    def operations(self) -> builtins.list[analytics_pb2.AnalyticsOperation]:
        """`analytics.operations.list`: every method with its schemas (also fills the cache)."""
        result = self._run("analytics.operations.list", analytics_pb2.AnalyticsOperationsListParams())
        with self._lock:
            self._specs = {op.name: MethodSpec.from_proto(op) for op in result.operations}
            self._methods = {}
        return builtins.list(result.operations)

    def operation(self, name: str) -> analytics_pb2.AnalyticsOperation:
        """`analytics.operations.get`: one method with its schemas."""
        params = analytics_pb2.AnalyticsOperationsGetParams(name=name)
        return self._run("analytics.operations.get", params).operation  # type: ignore[no-any-return]

    def execute(self, name: str, params: Mapping[str, Any] | None = None, /, **kwargs: Any) -> AnalyticsResult:
        """`analytics.execute`: run method `name` with `params` (a dict) and/or keywords."""
        merged = {**(params or {}), **kwargs}
        request = analytics_pb2.AnalyticsExecuteParams(operation=name, params=to_struct(merged))
        return AnalyticsResult.from_proto(self._run("analytics.execute", request))

    def refresh(self) -> None:
        """Forget the cached method list; it is reloaded at next use."""
        with self._lock:
            self._specs = None
            self._methods = {}

    def _load(self) -> dict[str, MethodSpec]:
        specs = self._specs
        if specs is None:
            self.operations()
            specs = self._specs or {}
        return specs

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        specs = self._load()
        if name not in specs:
            raise AttributeError(f"the server has no analytics method {name!r}; it has: {', '.join(sorted(specs))}")
        method = self._methods.get(name)
        if method is None:
            method = make_method(specs[name], self.execute, is_async=False)
            self._methods[name] = method
        return method

    def __dir__(self) -> Iterable[str]:
        names = set(super().__dir__())
        try:
            names.update(self._load())
        except GeoperaError:
            pass
        return sorted(names)
