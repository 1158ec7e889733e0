"""The asyncio client (grpc.aio): `AsyncClient`, its namespaces, `AsyncJob` and
`AsyncJobWatch`.

This module is the one place where the client's operations are written. They
do their I/O through `self._io` (_io.py): grpc.aio here, grpc's blocking
channel under the synchronous `Client` (_client.py), which runs these same
coroutines on the calling thread.
"""

from __future__ import annotations

import builtins
import collections
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import IO, Any, Self, TypeVar

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
    webhooks_pb2,
)
from geopera_sdk._analytics import AnalyticsResult, MethodSpec, make_method
from geopera_sdk._base import (
    Configured,
    Params,
    Settings,
    When,
    channel_options,
    execute_request,
    new_idempotency_key,
    unpack_result,
)
from geopera_sdk._convert import (
    TERMINAL_STATUSES,
    asset_input,
    is_safe_to_repeat,
    job_status,
    strings,
    takes_idempotency_key,
    to_struct,
    to_timestamp,
    view_number,
)
from geopera_sdk._errors import GeoperaError, Internal, JobFailedError, Unavailable, error_from_rpc
from geopera_sdk._io import AsyncIO, ClientIO
from geopera_sdk._job import (
    LAST_ERROR_LOGS,
    JobProgress,
    _BatchDisplay,
    _JobBase,
    _WaitDisplay,
    job_error_reason,
    log_level,
)
from geopera_sdk._progress import open_bar
from geopera_sdk._retry import Attempts, RetryPolicy
from geopera_sdk._transfer import (
    DownloadResult,
    DownloadSink,
    MiB,
    SignedUrl,
    Source,
    Target,
    UploadSource,
    resource_name,
)

T = TypeVar("T")
M = TypeVar("M", bound=Message)


async def apaginate(
    fetch: Callable[[str], Awaitable[tuple[Sequence[T], str]]], max_items: int | None
) -> AsyncIterator[T]:
    """Items of successive pages (`fetch(page_token) -> (items, next_page_token)`)."""
    if max_items is not None and max_items <= 0:
        return
    token = ""
    count = 0
    while True:
        items, token = await fetch(token)
        for item in items:
            yield item
            count += 1
            if max_items is not None and count >= max_items:
                return
        if not token:
            return


class AsyncClient(Configured):
    """An asyncio client of the Geopera kernel.

    ``AsyncClient("127.0.0.1:50051", token)``: `target` is any gRPC target
    (`host:port`, `dns:///host:port`, `ipv4:a:p1,b:p2` for several replicas).
    `timeout` is the deadline of one attempt of a unary call; `retries` a
    `RetryPolicy` or a number of retries (UNAVAILABLE only; 0 disables).
    Pass `credentials` (e.g. `grpc.ssl_channel_credentials()`) for TLS.

    Asyncio: use it inside the event loop, ``async with AsyncClient(target, token) as client:``.
    """

    # The I/O under the operations; the synchronous `Client` runs them over `BlockingIO`.
    _io_type: type[ClientIO] = AsyncIO

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
        self._io: ClientIO = self._io_type(target, credentials, channel_options(options))
        self.items = AsyncItems(self)
        self.projects = AsyncProjects(self)
        self.credits = AsyncCredits(self)
        self.jobs = AsyncJobs(self)
        self.job_types = AsyncJobTypes(self)
        self.workers = AsyncWorkers(self)
        self.analytics = AsyncAnalytics(self)
        self.webhooks = AsyncWebhooks(self)

    # -- lifecycle ---------------------------------------------------------

    @property
    def _stub(self) -> kernel_pb2_grpc.KernelServiceAsyncStub:
        return self._io.stub  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self._io.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.target!r})"

    # -- the generic call --------------------------------------------------

    async def execute(
        self,
        operation: str,
        params: Params = None,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline)
        validate_only: bool = False,
    ) -> Message:
        """Run one operation: `params` is its params message or a dict (proto3
        JSON names) parsed into it; returns its result message. Operations
        that honour `idempotency-key` (spends, `analytics.execute`) get one
        (yours, or a fresh one) that every retry of this call reuses.
        `validate_only=True` (ExecuteRequest.validate_only) checks everything
        and changes nothing: a spend's result carries its `estimate`."""
        request = execute_request(operation, params, validate_only)
        if idempotency_key is None and takes_idempotency_key(operation) and not validate_only:
            idempotency_key = new_idempotency_key()
        metadata = self._settings.metadata(idempotency_key)
        attempts = Attempts(self.retry_policy)
        per_attempt = self.timeout if timeout is None else timeout
        safe = validate_only or is_safe_to_repeat(operation)
        while True:
            try:
                response = await self._stub.Execute(
                    request, metadata=metadata, timeout=attempts.attempt_timeout(per_attempt)
                )
                return unpack_result(operation, response)
            except grpc.RpcError as err:
                error = error_from_rpc(err)
            delay = attempts.next_delay(error, safe=safe)
            if delay is None:
                raise error
            await self._io.sleep(delay)

    async def _run(self, operation: str, params: Message, **kwargs: Any) -> Any:
        return await self.execute(operation, params, **kwargs)

    # -- processing shortcuts ---------------------------------------------

    async def clip(
        self,
        source_item_id: str,
        aoi_geometry: Mapping[str, Any] | struct_pb2.Struct,
        *,
        project_id: str | None = None,
        asset_keys: Sequence[str] | None = None,
        output_name: str = "",
        target_collection_id: str = "",
        idempotency_key: str | None = None,
        validate_only: bool = False,
    ) -> AsyncJob:
        """`clip.create_from_item`: clip a source item's rasters to an AOI (GeoJSON)
        as a new item; returns the dispatched job. `project_id` defaults to the
        source item's project. `validate_only=True` prices it without spending:
        the handle has no id, and its `estimate` is what the clip would hold."""
        if project_id is None:
            project_id = (await self.items.get(source_item_id)).project_id
        params = processing_pb2.ClipCreateFromItemParams(
            source_item_id=source_item_id,
            project_id=project_id,
            aoi_geometry=to_struct(aoi_geometry),
            asset_keys=strings(asset_keys),
            output_name=output_name,
            target_collection_id=target_collection_id,
        )
        result = await self._run(
            "clip.create_from_item", params, idempotency_key=idempotency_key, validate_only=validate_only
        )
        return AsyncJob(self, result.job, result)

    # -- bytes ---------------------------------------------------------------

    async def upload(
        self,
        project_id: str,
        source: Source,
        *,
        file_name: str | None = None,
        chunk_size: int = MiB,
        progress: bool | Callable[[float, float], Any] = False,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline)
    ) -> str:
        """Upload a file (path, bytes or seekable binary file) with `UploadAsset`
        for a later `items.create`; returns the upload id. The size and SHA-256
        are sent, so the server refuses anything that arrived damaged. A dropped
        upload starts again (a new upload; the old one expires)."""
        src = await self._io.to_thread(UploadSource, source, file_name, chunk_size)
        bar = open_bar(progress, total=src.size, desc=src.file_name, unit="B")
        attempts = Attempts(self.retry_policy, timeout, stream=True)
        try:
            while True:
                try:
                    response = await self._stub.UploadAsset(
                        self._io.in_thread(src.requests(project_id, bar.update)),
                        metadata=self._settings.metadata(),
                        timeout=attempts.remaining(),
                    )
                    return src.check(response)
                except grpc.RpcError as err:
                    error = error_from_rpc(err)
                delay = attempts.next_delay(error, safe=True)
                if delay is None:
                    raise error
                await self._io.sleep(delay)
        finally:
            bar.close()

    async def download(
        self,
        target: Target,
        dest: str | os.PathLike[str] | IO[bytes],
        *,
        progress: bool | Callable[[float, float], Any] = False,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline)
    ) -> DownloadResult:
        """Download an item asset or an analytics artifact (`href` string,
        `Asset` or `Artifact`) to a path (written as `<dest>.part`, renamed
        when complete) or a binary file. A dropped stream resumes at the bytes
        already received (`read_offset`); the SHA-256 is verified
        (`ChecksumMismatch`)."""
        name, expected = resource_name(target)
        sink = await self._io.to_thread(DownloadSink, name, dest, expected)
        bar = None
        attempts = Attempts(self.retry_policy, timeout, stream=True)
        try:
            while True:
                call = self._stub.DownloadAsset(
                    sink.request(), metadata=self._settings.metadata(), timeout=attempts.remaining()
                )
                try:
                    first = True
                    async for message in call:
                        await self._io.to_thread(sink.accept, message, first)
                        first = False
                        if bar is None:  # once the first message has told the size
                            bar = open_bar(progress, total=sink.total or 0, desc=name, unit="B")
                        bar.update(sink.offset)
                        attempts.progressed()
                    if sink.complete:
                        return await self._io.to_thread(sink.finish)
                    error: GeoperaError = Unavailable("the download ended early", reason="STREAM_ENDED")
                except grpc.RpcError as err:
                    error = error_from_rpc(err)
                finally:
                    call.cancel()
                delay = attempts.next_delay(error, safe=True)
                if delay is None:
                    raise error
                sink.resumes += 1
                await self._io.sleep(delay)
        except BaseException:
            sink.abort()
            raise
        finally:
            if bar is not None:
                bar.close()

    async def sign(self, target: Target, *, ttl_seconds: int = 0) -> SignedUrl:
        """`assets.sign`: a URL that downloads an item asset or an analytics
        artifact (`href` string, `Asset` or `Artifact`) over HTTP with no
        header until it expires: for curl, a browser, GDAL
        (``rio info /vsicurl/<url>``) or QGIS. `ttl_seconds` is 1..604800
        (7 days); 0 takes the server's default (1 hour). Anyone holding the
        URL can read the resource until `expire_time`."""
        name, _ = resource_name(target)
        params = catalog_pb2.AssetsSignParams(resource_name=name, ttl_seconds=ttl_seconds)
        result = await self._run("assets.sign", params)
        return SignedUrl.from_result(result)


class _AsyncNamespace:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def _run(self, operation: str, params: Message, **kwargs: Any) -> Any:
        return await self._client.execute(operation, params, **kwargs)

    def _pages(
        self, operation: str, params: Any, field: str, max_items: int | None, handle: Callable[[Any], Any] | None = None
    ) -> AsyncIterator[Any]:
        """The `field` entries of every page of a list operation (`params.page_token`
        set per page), each through `handle` when given."""

        async def fetch(token: str) -> tuple[Sequence[Any], str]:
            params.page_token = token
            page = await self._run(operation, params)
            entries = getattr(page, field)
            return ([handle(e) for e in entries] if handle else entries), page.next_page_token

        return apaginate(fetch, max_items)

    async def _get(self, operation: str, params: Message, result_type: type[M]) -> M:
        """`_run` typed by its result (which `execute` has unpacked as that type)."""
        result = await self._client.execute(operation, params)
        if not isinstance(result, result_type):
            raise Internal(
                f"{operation}: expected a {result_type.DESCRIPTOR.full_name} result, got {result.DESCRIPTOR.full_name}",
                reason="UNEXPECTED_RESULT_TYPE",
            )
        return result


class AsyncItems(_AsyncNamespace):
    """Catalog items (`items.*`)."""

    async def get(self, item_id: str) -> resources_pb2.Item:
        """`items.get`: one item with its assets."""
        params = catalog_pb2.ItemsGetParams(item_id=item_id)
        return (await self._get("items.get", params, catalog_pb2.ItemsGetResult)).item

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
        view: str | int | None = None,
    ) -> AsyncIterator[resources_pb2.Item]:
        """`items.list`: a project's items ordered by (datetime, id), page by page
        (`page_size` per call) up to `max_items` in all:
        ``async for item in client.items.list("demo")``. Items come in the
        `"basic"` view (no footprint, properties or band statistics) unless
        `view="full"`; `items.get(id)` always answers the whole item."""
        params = catalog_pb2.ItemsListParams(
            project_id=project_id,
            collection_id=collection_id or "",
            bbox=list(bbox or ()),
            page_size=page_size or 0,
            view=view_number(catalog_pb2.ItemView, "ITEM_VIEW_", view),  # type: ignore[arg-type]
        )
        if datetime_start is not None:
            params.datetime_start.CopyFrom(to_timestamp(datetime_start))
        if datetime_end is not None:
            params.datetime_end.CopyFrom(to_timestamp(datetime_end))
        if intersects is not None:
            params.intersects.CopyFrom(to_struct(intersects))

        return self._pages("items.list", params, "items", max_items)

    async def create(
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
        return (await self._get("items.create", params, catalog_pb2.ItemsCreateResult)).item

    async def register_file(
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
        upload_id = await self._client.upload(project_id, path, progress=progress)
        asset = catalog_pb2.AssetInput(key=asset_key, upload_id=upload_id, roles=strings(roles), title=title)
        return await self.create(
            project_id,
            name,
            [asset],
            collection_id=collection_id,
            datetime=datetime,
            properties=properties,
            convert_to_cog=convert_to_cog,
        )

    async def lineage(self, item_id: str, *, direction: str = "", max_depth: int = 0) -> catalog_pb2.ItemsLineageResult:
        """`items.lineage`: the provenance graph (`nodes`, `edges`) around an item;
        `direction` is `upstream`, `downstream` or `both` (default)."""
        params = catalog_pb2.ItemsLineageParams(item_id=item_id, direction=direction, max_depth=max_depth)
        return await self._get("items.lineage", params, catalog_pb2.ItemsLineageResult)


class AsyncProjects(_AsyncNamespace):
    """Projects (`projects.*`)."""

    async def get(self, project_id: str) -> resources_pb2.Project:
        params = catalog_pb2.ProjectsGetParams(project_id=project_id)
        return (await self._get("projects.get", params, catalog_pb2.ProjectsGetResult)).project

    def list(
        self, *, page_size: int | None = None, max_items: int | None = None
    ) -> AsyncIterator[resources_pb2.Project]:
        """The projects the token belongs to (all of them for admins), by id."""

        params = catalog_pb2.ProjectsListParams(page_size=page_size or 0)
        return self._pages("projects.list", params, "projects", max_items)


class AsyncCredits(_AsyncNamespace):
    """Credits (`credits.*`)."""

    async def balance(self, project_id: str) -> resources_pb2.CreditBalance:
        """`credits.balance.get`."""
        params = credits_pb2.CreditsBalanceGetParams(project_id=project_id)
        return (await self._get("credits.balance.get", params, credits_pb2.CreditsBalanceGetResult)).balance

    def ledger(
        self,
        project_id: str,
        *,
        job_id: str | None = None,
        page_size: int | None = None,
        max_items: int | None = None,
    ) -> AsyncIterator[resources_pb2.LedgerEntry]:
        """`credits.ledger.list`: ledger entries, newest first."""

        params = credits_pb2.CreditsLedgerListParams(
            project_id=project_id, job_id=job_id or "", page_size=page_size or 0
        )
        return self._pages("credits.ledger.list", params, "entries", max_items)


class AsyncWebhooks(_AsyncNamespace):
    """Webhooks (`webhooks.*`): a project's job events POSTed to a URL, signed
    as Standard Webhooks (verify them with the `standardwebhooks` package)."""

    async def create(
        self, project_id: str, url: str, event_types: Iterable[str] = ("job.succeeded", "job.failed", "job.cancelled")
    ) -> webhooks_pb2.WebhooksCreateResult:
        """`webhooks.create`: the hook and its `secret` (returned this once: keep it)."""
        params = webhooks_pb2.WebhooksCreateParams(project_id=project_id, url=url, event_types=list(event_types))
        return await self._get("webhooks.create", params, webhooks_pb2.WebhooksCreateResult)

    def list(
        self, project_id: str, *, page_size: int | None = None, max_items: int | None = None
    ) -> AsyncIterator[webhooks_pb2.Webhook]:
        """`webhooks.list`: the project's hooks, oldest first."""

        params = webhooks_pb2.WebhooksListParams(project_id=project_id, page_size=page_size or 0)
        return self._pages("webhooks.list", params, "webhooks", max_items)

    async def delete(self, webhook_id: str) -> webhooks_pb2.Webhook:
        """`webhooks.delete`: nothing more is sent to the hook."""
        params = webhooks_pb2.WebhooksDeleteParams(webhook_id=webhook_id)
        return (await self._get("webhooks.delete", params, webhooks_pb2.WebhooksDeleteResult)).webhook

    async def test(self, webhook_id: str) -> str:
        """`webhooks.test`: sends a `webhook.test` message; its `webhook-id`."""
        params = webhooks_pb2.WebhooksTestParams(webhook_id=webhook_id)
        return (await self._get("webhooks.test", params, webhooks_pb2.WebhooksTestResult)).message_id

    def deliveries(
        self, webhook_id: str, *, page_size: int | None = None, max_items: int | None = None
    ) -> AsyncIterator[webhooks_pb2.WebhookAttempt]:
        """`webhooks.deliveries.list`: the hook's delivery attempts, newest first."""

        params = webhooks_pb2.WebhooksDeliveriesListParams(webhook_id=webhook_id, page_size=page_size or 0)
        return self._pages("webhooks.deliveries.list", params, "attempts", max_items)


class AsyncJobs(_AsyncNamespace):
    """Processing jobs (`processing.*`)."""

    def _job(self, result: Any) -> AsyncJob:
        return AsyncJob(self._client, result.job, result)

    async def create(
        self,
        project_id: str,
        job_type_id: str,
        input_params: Mapping[str, Any] | struct_pb2.Struct | None = None,
        *,
        target_collection_id: str | None = None,
        idempotency_key: str | None = None,
        validate_only: bool = False,
    ) -> AsyncJob:
        """`processing.create`: a PENDING job with its credits reserved
        (`validate_only=True`: none, the handle's `estimate` says how many)."""
        params = processing_pb2.ProcessingCreateParams(
            project_id=project_id,
            job_type_id=job_type_id,
            input_params=to_struct(input_params),
            target_collection_id=target_collection_id or "",
        )
        return self._job(
            await self._run("processing.create", params, idempotency_key=idempotency_key, validate_only=validate_only)
        )

    async def create_and_dispatch(
        self,
        project_id: str,
        job_type_id: str,
        input_params: Mapping[str, Any] | struct_pb2.Struct | None = None,
        *,
        target_collection_id: str | None = None,
        idempotency_key: str | None = None,
        validate_only: bool = False,
    ) -> AsyncJob:
        """`processing.create_and_dispatch`: create and queue a job in one
        transaction (`validate_only=True`: price it, see `create`)."""
        params = processing_pb2.ProcessingCreateAndDispatchParams(
            project_id=project_id,
            job_type_id=job_type_id,
            input_params=to_struct(input_params),
            target_collection_id=target_collection_id or "",
        )
        operation = "processing.create_and_dispatch"
        return self._job(
            await self._run(operation, params, idempotency_key=idempotency_key, validate_only=validate_only)
        )

    async def dispatch(
        self, job_id: str, *, idempotency_key: str | None = None, validate_only: bool = False
    ) -> AsyncJob:
        """`processing.dispatch`: queue a PENDING job for a worker (`validate_only=True`: only check it could)."""
        params = processing_pb2.ProcessingDispatchParams(job_id=job_id)
        return self._job(
            await self._run("processing.dispatch", params, idempotency_key=idempotency_key, validate_only=validate_only)
        )

    async def get(self, job_id: str) -> AsyncJob:
        """`processing.jobs.get`."""
        params = processing_pb2.ProcessingJobsGetParams(job_id=job_id)
        return self._job(await self._run("processing.jobs.get", params))

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
        view: str | int | None = None,
    ) -> AsyncIterator[AsyncJob]:
        """`processing.jobs.list`: a project's jobs, newest first; `status` is a
        name (`"running"`) or a `JobStatus` number. Jobs come in the `"basic"`
        view (without `input_params`) unless `view="full"`."""
        params = processing_pb2.ProcessingJobsListParams(
            project_id=project_id,
            # An enum number; the stubs want JobStatus.ValueType, a NewType that exists in the .pyi only.
            status=job_status(status) if status is not None else 0,  # type: ignore[arg-type]
            job_type_id=job_type_id or "",
            page_size=page_size or 0,
            view=view_number(processing_pb2.JobView, "JOB_VIEW_", view),  # type: ignore[arg-type]
        )
        if create_time_start is not None:
            params.create_time_start.CopyFrom(to_timestamp(create_time_start))
        if create_time_end is not None:
            params.create_time_end.CopyFrom(to_timestamp(create_time_end))

        return self._pages("processing.jobs.list", params, "jobs", max_items, lambda job: AsyncJob(self._client, job))

    async def cancel(self, job_id: str, *, reason: str = "") -> AsyncJob:
        """`processing.jobs.cancel`: held credits are released."""
        params = processing_pb2.ProcessingJobsCancelParams(job_id=job_id, reason=reason)
        return self._job(await self._run("processing.jobs.cancel", params))

    async def resubmit(
        self,
        job_id: str,
        input_params: Mapping[str, Any] | struct_pb2.Struct | None = None,
        *,
        idempotency_key: str | None = None,
        validate_only: bool = False,
    ) -> AsyncJob:
        """`processing.jobs.resubmit`: run a finished job again as a new,
        dispatched job (its own credit hold, `resubmitted_from` naming the
        original); `input_params` are merged over the original's (a None
        value removes a key)."""
        params = processing_pb2.ProcessingJobsResubmitParams(job_id=job_id, input_params=to_struct(input_params))
        operation = "processing.jobs.resubmit"
        return self._job(
            await self._run(operation, params, idempotency_key=idempotency_key, validate_only=validate_only)
        )

    async def create_batch(
        self,
        project_id: str,
        requests: Iterable[Mapping[str, Any]],
        *,
        all_or_nothing: bool = False,
        dispatch: bool = False,
        idempotency_key: str | None = None,
        validate_only: bool = False,
    ) -> AsyncBatch:
        """`processing.create_batch`: up to 1,000 jobs in one call, each
        request a mapping of `job_type_id`, `input_params` and optionally
        `target_collection_id`. `all_or_nothing=True` creates every job or
        raises (the first failing request's error, or `INSUFFICIENT_CREDITS`
        for the whole batch); otherwise `errors` says which requests failed."""
        params = processing_pb2.ProcessingCreateBatchParams(
            project_id=project_id, all_or_nothing=all_or_nothing, dispatch=dispatch
        )
        for request in requests:
            params.requests.add(
                job_type_id=request["job_type_id"],
                input_params=to_struct(request.get("input_params")),
                target_collection_id=request.get("target_collection_id") or "",
            )
        operation = "processing.create_batch"
        result = await self._run(operation, params, idempotency_key=idempotency_key, validate_only=validate_only)
        return AsyncBatch(self._client, result)

    def watch_many(
        self,
        *,
        project_id: str = "",
        batch_id: str = "",
        status: int | str | None = None,
        job_type_id: str | None = None,
        after_sequences: Mapping[str, int] | None = None,
        timeout: float | None = None,
    ) -> AsyncJobsWatch:
        """The events of many jobs in one stream (`WatchJobs`): a batch's, or
        a project's unfinished ones (filtered by `status`, `job_type_id`).
        Dropped streams are resumed transparently, per job."""
        request = kernel_pb2.WatchJobsRequest(
            project_id=project_id,
            batch_id=batch_id,
            status=job_status(status) if status is not None else 0,  # type: ignore[arg-type]
            job_type_id=job_type_id or "",
        )
        return AsyncJobsWatch(self._client, request, dict(after_sequences or {}), timeout)

    async def wait_all(
        self,
        jobs: Iterable[AsyncJob] | AsyncBatch,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline)
        progress: JobProgress = False,
    ) -> builtins.list[AsyncJob]:
        """Follow every job (one `WatchJobs` stream: by batch when they share
        one, else by their project) until each has ended, updating the handles;
        `progress=True` draws one combined bar on stderr (a callable gets every
        snapshot). Returns the handles (check each `succeeded`)."""
        handles = builtins.list(jobs.jobs if isinstance(jobs, AsyncBatch) else jobs)
        if not handles:
            return handles
        by_id = {job.id: job for job in handles}
        batches = {job.proto.batch_id for job in handles}
        projects = {job.proto.project_id for job in handles}
        batch_id = batches.pop() if len(batches) == 1 else ""
        if not batch_id and len(projects) != 1:
            raise ValueError("wait_all follows the jobs of one project (or one batch)")
        watch = self.watch_many(
            project_id="" if batch_id else projects.pop(),
            batch_id=batch_id,
            after_sequences={job.id: 0 for job in handles} if not batch_id else None,
            timeout=timeout,
        )
        display = _BatchDisplay(len(handles), progress)
        open_ids = {job.id for job in handles if job.proto.status not in TERMINAL_STATUSES or not job.proto.sequence}
        try:
            async for event in watch:
                handle = by_id.get(event.job.id)
                if handle is None:
                    continue
                handle.proto = event.job
                display.show(handles, event.job)
                if event.job.status in TERMINAL_STATUSES:
                    open_ids.discard(event.job.id)
                    if not open_ids:
                        break
        finally:
            await watch.aclose()
            display.close()
        return handles

    def logs(
        self,
        job_id: str,
        *,
        min_level: int | str | None = None,
        page_size: int | None = None,
        max_items: int | None = None,
    ) -> AsyncIterator[resources_pb2.JobLogEntry]:
        """`processing.jobs.logs`: the job's log records (`JobLogEntry`), oldest first, of at
        least `min_level` (`"warning"`, `"error"`... or a `LogLevel` number)."""
        params = processing_pb2.ProcessingJobsLogsParams(
            job_id=job_id,
            min_level=log_level(min_level),  # type: ignore[arg-type]  # a LogLevel number
            page_size=page_size or 0,
        )

        return self._pages("processing.jobs.logs", params, "entries", max_items)

    def watch(
        self,
        job_id: str,
        *,
        after_sequence: int = 0,
        timeout: float | None = None,
        include_logs: bool = False,
        after_log_sequence: int = 0,
        min_log_level: int | str | None = None,
    ) -> AsyncJobWatch:
        """The job's events (`WatchJob`): a snapshot first, then every change,
        ending after the terminal event. A dropped stream (UNAVAILABLE) is
        resumed transparently with `after_sequence`:
        ``async for event in client.jobs.watch(job_id)``. `include_logs=True` adds
        the job's log records (events of type `log` with `log_entry`, of at least
        `min_log_level`), resumed after `last_log_sequence` the same way."""
        logs = (after_log_sequence, log_level(min_log_level)) if include_logs else None
        return AsyncJobWatch(self._client, job_id, after_sequence, timeout, logs)

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline)
        progress: JobProgress = False,
        raise_on_failure: bool = True,
    ) -> AsyncJob:
        """Watch a job until it ends (see `AsyncJob.wait`)."""
        job = AsyncJob(self._client, resources_pb2.Job(id=job_id))
        return await job.wait(timeout=timeout, progress=progress, raise_on_failure=raise_on_failure)


class _AsyncWatch(AsyncIterator[kernel_pb2.WatchJobResponse]):
    """An async iterator over a watch stream that resumes after dropped streams
    (`resumes` counts the reconnections); a subclass opens the stream, says which
    events are new, and when the stream is complete."""

    def __init__(self, client: AsyncClient, timeout: float | None) -> None:
        self.resumes = 0
        self._client = client
        self._timeout = timeout
        # The open stream: a blocking client's close() may come from another thread than
        # the one iterating, and cancels it.
        self._call: Any = None
        self._events = self._run()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> kernel_pb2.WatchJobResponse:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop watching (cancels the open stream)."""
        if self._call is not None:
            self._call.cancel()
        await self._events.aclose()

    def _open(self, timeout: float | None) -> Any:
        """The stream, from the latest event seen."""
        raise NotImplementedError

    def _is_new(self, event: kernel_pb2.WatchJobResponse) -> bool:
        """Whether to pass the event on (and note it as seen)."""
        raise NotImplementedError

    def _is_last(self, event: kernel_pb2.WatchJobResponse) -> bool:
        return False

    def _ended(self, received: bool) -> GeoperaError | None:
        """At a stream's OK end: None when the watch is complete, else the error to resume on."""
        return None

    async def _run(self) -> AsyncGenerator[kernel_pb2.WatchJobResponse, None]:
        attempts = Attempts(self._client.retry_policy, self._timeout, stream=True)
        while True:
            call = self._call = self._open(attempts.remaining())
            received = False
            try:
                async for event in call:
                    received = True
                    if not self._is_new(event):
                        continue
                    attempts.progressed()
                    yield event
                    if self._is_last(event):
                        return
                error = self._ended(received)
                if error is None:
                    return
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
            await self._client._io.sleep(delay)


class AsyncJobWatch(_AsyncWatch):
    """An async iterator over a job's events that resumes after dropped streams.
    `resumes` counts the reconnections, `last_sequence` the latest event."""

    def __init__(
        self,
        client: AsyncClient,
        job_id: str,
        after_sequence: int,
        timeout: float | None,
        logs: tuple[int, int] | None = None,
    ) -> None:
        self.job_id = job_id
        self.last_sequence = after_sequence
        # With logs: (the last log record's sequence seen, the least level asked for).
        self.last_log_sequence = logs[0] if logs is not None else 0
        self._logs = logs
        self._yielded = False
        super().__init__(client, timeout)

    def _open(self, timeout: float | None) -> Any:
        request = kernel_pb2.WatchJobRequest(job_id=self.job_id, after_sequence=self.last_sequence)
        if self._logs is not None:
            request.include_logs = True
            request.after_log_sequence = self.last_log_sequence
            request.min_log_level = self._logs[1]  # type: ignore[assignment]  # a LogLevel number
        return self._client._stub.WatchJob(request, metadata=self._client._settings.metadata(), timeout=timeout)

    def _is_new(self, event: kernel_pb2.WatchJobResponse) -> bool:
        if event.HasField("log_entry"):  # a log record: its own sequence
            if event.log_entry.sequence <= self.last_log_sequence:
                return False
            self.last_log_sequence = event.log_entry.sequence
            return True
        if self._yielded and event.sequence <= self.last_sequence:
            return False  # already seen (never expected; cheap insurance)
        self.last_sequence = max(self.last_sequence, event.sequence)
        self._yielded = True
        return True

    def _is_last(self, event: kernel_pb2.WatchJobResponse) -> bool:
        return not event.HasField("log_entry") and event.job.status in TERMINAL_STATUSES

    def _ended(self, received: bool) -> GeoperaError | None:
        if not received:
            return None  # the server ends a watch OK only for an ended job: nothing was newer
        return Unavailable("the watch ended before the job did", reason="STREAM_ENDED")


class AsyncBatch:
    """What `create_batch` answers: `jobs` (the handles of the jobs created,
    in request order), `errors` (the `BatchRequestError` of each request that
    failed, with its `index` and `reason`), `batch_id`, and the raw `result`."""

    def __init__(self, client: AsyncClient, result: processing_pb2.ProcessingCreateBatchResult) -> None:
        self.result = result
        self.batch_id = result.batch_id
        self.jobs = [AsyncJob(client, job) for job in result.jobs if job.id or not result.batch_id]
        self.errors = [error for error in result.errors if error.reason]

    def __repr__(self) -> str:
        return f"<Batch {self.batch_id or '(validate only)'}: {len(self.jobs)} jobs, {len(self.errors)} errors>"


class AsyncJobsWatch(_AsyncWatch):
    """An async iterator over the events of many jobs (`WatchJobs`) that
    resumes dropped streams per job: `after_sequences` holds the latest
    sequence seen of each job, `resumes` counts the reconnections.
    The server ends WatchJobs OK once every job of the set has ended."""

    def __init__(
        self,
        client: AsyncClient,
        request: kernel_pb2.WatchJobsRequest,
        after_sequences: dict[str, int],
        timeout: float | None,
    ) -> None:
        self.after_sequences = after_sequences
        self._request = request
        super().__init__(client, timeout)

    def _open(self, timeout: float | None) -> Any:
        request = kernel_pb2.WatchJobsRequest()
        request.CopyFrom(self._request)
        for job_id, sequence in self.after_sequences.items():
            request.after_sequences[job_id] = sequence
        return self._client._stub.WatchJobs(request, metadata=self._client._settings.metadata(), timeout=timeout)

    def _is_new(self, event: kernel_pb2.WatchJobResponse) -> bool:
        seen = self.after_sequences.get(event.job.id, 0)
        if seen and event.sequence <= seen:
            return False  # already seen (never expected; cheap insurance)
        self.after_sequences[event.job.id] = event.sequence
        return True


class AsyncJobTypes(_AsyncNamespace):
    """Job types (`processing.job_types.*`)."""

    async def list(self) -> builtins.list[resources_pb2.JobType]:
        result = await self._run("processing.job_types.list", processing_pb2.ProcessingJobTypesListParams())
        return builtins.list(result.job_types)

    async def get(self, job_type_id: str) -> resources_pb2.JobType:
        params = processing_pb2.ProcessingJobTypesGetParams(job_type_id=job_type_id)
        result = await self._get("processing.job_types.get", params, processing_pb2.ProcessingJobTypesGetResult)
        return result.job_type


class AsyncWorkers(_AsyncNamespace):
    """Registered workers (`workers.list`, admin tokens)."""

    async def list(self, *, include_disconnected: bool = False) -> builtins.list[resources_pb2.Worker]:
        params = processing_pb2.WorkersListParams(include_disconnected=include_disconnected)
        return builtins.list((await self._run("workers.list", params)).workers)


class AsyncAnalytics(_AsyncNamespace):
    """Analytics methods (`analytics.*`). Besides `execute(name, ...)`, every
    method the server lists is an attribute (`client.analytics.zonal_stats(...)`)
    with the server's description as docstring and its JSON Schema as
    signature, loaded at first use and cached (`refresh()` reloads).

    Asyncio: method attributes have their signature and docstring once the
    list is loaded (`await client.analytics.operations()`); before that an
    attribute is a coroutine function that loads the list when called."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client)
        self._specs: dict[str, MethodSpec] | None = None
        self._methods: dict[str, Any] = {}

    async def operations(self) -> builtins.list[analytics_pb2.AnalyticsOperation]:
        """`analytics.operations.list`: every method with its schemas (also fills the cache)."""
        result = await self._run("analytics.operations.list", analytics_pb2.AnalyticsOperationsListParams())
        self._methods = {}
        self._specs = {op.name: MethodSpec.from_proto(op) for op in result.operations}
        return builtins.list(result.operations)

    async def operation(self, name: str) -> analytics_pb2.AnalyticsOperation:
        """`analytics.operations.get`: one method with its schemas."""
        params = analytics_pb2.AnalyticsOperationsGetParams(name=name)
        result = await self._get("analytics.operations.get", params, analytics_pb2.AnalyticsOperationsGetResult)
        return result.operation

    async def execute(
        self, name: str, params: Mapping[str, Any] | None = None, /, *, validate_only: bool = False, **kwargs: Any
    ) -> AnalyticsResult:
        """`analytics.execute`: run method `name` with `params` (a dict) and/or keywords.
        `validate_only=True` checks the call and reads no pixel: the answer's
        `pixels_to_read` is how many the method would read (None when it cannot tell)."""
        merged = {**(params or {}), **kwargs}
        request = analytics_pb2.AnalyticsExecuteParams(operation=name, params=to_struct(merged))
        result = await self._run("analytics.execute", request, validate_only=validate_only)
        return AnalyticsResult.from_proto(result, await self.output_schema(name))

    async def submit(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        /,
        *,
        project_id: str,
        idempotency_key: str | None = None,
        validate_only: bool = False,
        **kwargs: Any,
    ) -> AsyncJob:
        """`analytics.submit`: run method `name` as a job in `project_id` (no
        synchronous pixel limit, no credits); once `job.wait()` returns, the
        job's `output_artifacts[0]` (key `result`) is the JSON the synchronous
        call answers (`client.download`), followed by the method's files."""
        merged = {**(params or {}), **kwargs}
        request = analytics_pb2.AnalyticsSubmitParams(operation=name, params=to_struct(merged), project_id=project_id)
        result = await self._run(
            "analytics.submit", request, idempotency_key=idempotency_key, validate_only=validate_only
        )
        return AsyncJob(self._client, result.job, result)

    async def output_schema(self, name: str) -> dict[str, Any] | None:
        """The output JSON Schema of method `name` from the cached method list
        (loaded once); None when the server does not list it or the list
        cannot be read."""
        specs = self._specs
        if specs is None:
            try:
                await self.operations()
            except GeoperaError:
                return None
            specs = self._specs or {}
        spec = specs.get(name)
        return spec.output_schema if spec is not None else None

    def refresh(self) -> None:
        """Forget the cached method list; it is reloaded at next use."""
        self._specs = None
        self._methods = {}

    def _method(self, name: str, specs: dict[str, MethodSpec], *, is_async: bool, execute: Any) -> Any:
        """Method `name` as a callable (cached): a coroutine function, or for the
        blocking `Client` (is_async=False) a function running its `execute`."""
        if name not in specs:
            raise AttributeError(f"the server has no analytics method {name!r}; it has: {', '.join(sorted(specs))}")
        method = self._methods.get(name)
        if method is None:
            method = make_method(specs[name], execute, is_async=is_async)
            self._methods[name] = method
        return method

    # An attribute cannot await the method list: before it is loaded, a
    # name is a coroutine function that loads it when called.

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._specs is None:

            async def lazy(**params: Any) -> AnalyticsResult:
                if self._specs is None:
                    await self.operations()
                method = getattr(self, name)  # AttributeError when the server has no such method
                result: AnalyticsResult = await method(**params)
                return result

            lazy.__name__ = lazy.__qualname__ = name
            return lazy
        return self._method(name, self._specs, is_async=True, execute=self.execute)

    def __dir__(self) -> Iterable[str]:
        return sorted(set(super().__dir__()) | set(self._specs or ()))


class AsyncJob(_JobBase):
    """A job handle of `AsyncClient`: the latest snapshot plus the calls that act on it."""

    def __init__(self, client: AsyncClient, proto: resources_pb2.Job, result: Message | None = None) -> None:
        super().__init__(proto, result)
        self._client = client

    async def refresh(self) -> AsyncJob:
        """Fetch the latest snapshot (`processing.jobs.get`)."""
        self.proto = (await self._client.jobs.get(self.id)).proto
        return self

    async def cancel(self, reason: str = "") -> AsyncJob:
        """Cancel the job (`processing.jobs.cancel`); its held credits are released."""
        self.proto = (await self._client.jobs.cancel(self.id, reason=reason)).proto
        return self

    async def dispatch(self, *, idempotency_key: str | None = None) -> AsyncJob:
        """Dispatch a PENDING job (`processing.dispatch`)."""
        dispatched = await self._client.jobs.dispatch(self.id, idempotency_key=idempotency_key)
        self.proto, self.result = dispatched.proto, dispatched.result
        return self

    async def watch(
        self,
        *,
        after_sequence: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline)
    ) -> AsyncIterator[kernel_pb2.WatchJobResponse]:
        """The job's events (see `AsyncJobs.watch`); each one updates this handle."""
        async for event in self._client.jobs.watch(self.id, after_sequence=after_sequence, timeout=timeout):
            self.proto = event.job
            yield event

    def logs(
        self, *, min_level: int | str | None = None, max_items: int | None = None
    ) -> AsyncIterator[resources_pb2.JobLogEntry]:
        """The job's log records, oldest first (see `AsyncJobs.logs`)."""
        return self._client.jobs.logs(self.id, min_level=min_level, max_items=max_items)

    async def wait(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline)
        progress: JobProgress = False,
        raise_on_failure: bool = True,
    ) -> AsyncJob:
        """Watch until the job ends and return this handle. A job that ends FAILED raises
        `JobFailedError` with its reason and its last ERROR log records (`.logs`) unless
        `raise_on_failure=False`; a CANCELLED one returns (check `succeeded`).
        `progress=True` draws a bar on stderr when it is a terminal, with the status and
        the time waited; a callable gets every snapshot. `timeout` (seconds) raises
        `DeadlineExceeded` (a `TimeoutError`)."""
        display = _WaitDisplay(self.id, progress)
        errors: collections.deque[resources_pb2.JobLogEntry] = collections.deque(maxlen=LAST_ERROR_LOGS)
        watch = self._client.jobs.watch(self.id, timeout=timeout, include_logs=True, min_log_level="error")
        try:
            async for event in watch:
                if event.HasField("log_entry"):
                    errors.append(event.log_entry)
                    continue
                self.proto = event.job
                display.show(event.job)
        finally:
            display.close()
        if raise_on_failure and self.proto.status == resources_pb2.JOB_STATUS_FAILED:
            raise JobFailedError(self.proto, job_error_reason(self.proto), errors)
        return self
