"""The worker runtime: one Connect session to the server and a task per assigned
job, which reports its end (failure, hand-back) with the job's token; the other
calls back for a job (sources, progress, outputs) are in ``job_calls``.

It reconnects with jittered exponential backoff, heartbeats the jobs it
holds, and on shutdown stops taking work, lets running jobs finish within a
grace period and hands back the rest. (Past 400 lines: a job's attempt, its
span and its end reports are one lifecycle, kept together on purpose.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from grpc import aio
from opentelemetry import trace
from pydantic import ValidationError

from geopera.v1 import kernel_pb2_grpc, resources_pb2, worker_pb2, worker_pb2_grpc
from geopera_kernel.raster import COG_WRITE_FAILED, RasterError, tracing
from geopera_kernel.worker.job_calls import (
    ProgressReporter,
    download_asset,
    error_reason,
    register_outputs,
    resending,
    struct,
)
from geopera_kernel.worker.job_logs import JobLogBuffer, JobLogSender, capturing
from geopera_kernel.worker.plugin import (
    AnalyticsAnswer,
    JobCancelled,
    JobContext,
    JobFailed,
    JobPlugin,
    PluginRegistry,
    SourceAsset,
    SourceItem,
)

log = logging.getLogger("geopera.worker")

FATAL_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
# Faults of the connection or the server, not of the job: worth another try (the
# same call soon, or another attempt of the job). Every other status repeats.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)
# RegisterOutputs refused the outputs for what they are: the server has failed
# the job itself (or the attempt was over), so there is nothing left to report.
OUTPUTS_REFUSED_CODES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION}
)
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 16 << 20),
]


@dataclass
class WorkerConfig:
    server: str
    token: str
    capacity: int = 2
    name: str = ""
    workdir: Path | None = None
    shutdown_grace_seconds: float = 30.0
    # Open sources where the server stores them when this host can (same host
    # or a shared mount); False always downloads them with the job token.
    shared_storage: bool = True
    # TLS to the server; the PEM roots to trust, or None for the system's.
    tls: bool = False
    tls_root_certificates: bytes | None = None


@dataclass
class RunningJob:
    job_id: str
    token: str
    task: asyncio.Task[None] | None = None
    cancel: Any = field(default=None)  # threading.Event shared with the plugin's JobContext
    handed_back: bool = False


def _struct_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


class Worker:
    def __init__(self, config: WorkerConfig, plugins: PluginRegistry) -> None:
        self.config = config
        self.plugins = plugins
        self.worker_id = ""
        self.running: dict[str, RunningJob] = {}
        self.draining = False
        # A private folder, inside --workdir when given: shutdown removes only it,
        # never the folder the user named (nor anything else in it).
        if config.workdir is not None:
            config.workdir.mkdir(parents=True, exist_ok=True)
        self._workdir = Path(tempfile.mkdtemp(prefix=f"geopera-worker-{os.getpid()}-", dir=config.workdir))
        self._outbound: asyncio.Queue[worker_pb2.ConnectRequest | None] | None = None
        self._heartbeat_seconds = 3.0
        self._channel: aio.Channel | None = None

    # -- session -----------------------------------------------------------

    def _metadata(self, token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    def _hello(self) -> worker_pb2.ConnectRequest:
        declared = []
        for plugin in self.plugins:
            cost = plugin.cost_model
            declared.append(
                worker_pb2.JobTypeDeclaration(
                    job_type_id=plugin.job_type_id,
                    description=plugin.description,
                    input_schema=struct(plugin.input_schema()),
                    cost_model=resources_pb2.CostModel(
                        flat=cost.flat, per_km2=cost.per_km2, per_asset=cost.per_asset, minimum=cost.minimum
                    ),
                )
            )
        return worker_pb2.ConnectRequest(
            hello=worker_pb2.WorkerHello(
                name=self.config.name or f"{os.uname().nodename}:{os.getpid()}",
                job_types=declared,
                capacity=self.config.capacity,
                worker_id=self.worker_id,
            )
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, reconnecting as needed; then drain."""
        if self.config.tls:
            credentials = grpc.ssl_channel_credentials(self.config.tls_root_certificates)
            self._channel = aio.secure_channel(self.config.server, credentials, options=CHANNEL_OPTIONS)
        else:
            self._channel = aio.insecure_channel(self.config.server, options=CHANNEL_OPTIONS)
        backoff = 0.5
        session: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                session = asyncio.create_task(self._session())
                stopper = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    break
                stopper.cancel()
                try:
                    session.result()
                    backoff = 0.5
                except aio.AioRpcError as err:
                    if err.code() in FATAL_CODES:
                        raise
                    delay = backoff * random.uniform(0.5, 1.5)
                    log.warning("connection to %s lost (%s); reconnecting in %.1f s", self.config.server,
                                err.code().name, delay)  # fmt: skip
                    await asyncio.sleep(delay)
                    backoff = min(backoff * 2, 30.0)
            await self._drain()
        finally:
            if session is not None and not session.done():
                session.cancel()
                with contextlib.suppress(asyncio.CancelledError, aio.AioRpcError):
                    await session
            await self._channel.close()
            shutil.rmtree(self._workdir, ignore_errors=True)

    async def _session(self) -> None:
        assert self._channel is not None
        stub = worker_pb2_grpc.WorkerServiceStub(self._channel)
        outbound: asyncio.Queue[worker_pb2.ConnectRequest | None] = asyncio.Queue()
        self._outbound = outbound
        outbound.put_nowait(self._hello())

        async def requests() -> AsyncIterator[worker_pb2.ConnectRequest]:
            while (message := await outbound.get()) is not None:
                yield message

        call = stub.Connect(requests(), metadata=self._metadata(self.config.token))
        heartbeats = asyncio.create_task(self._heartbeat_loop(outbound))
        try:
            async for response in call:
                kind = response.WhichOneof("message")
                if kind == "welcome":
                    self.worker_id = response.welcome.worker_id
                    self._heartbeat_seconds = response.welcome.heartbeat_interval_seconds or 3.0
                    log.info("connected as %s", self.worker_id)
                    self._heartbeat_now()
                elif kind == "assignment":
                    self._accept(response.assignment)
                elif kind == "cancel":
                    running = self.running.get(response.cancel.job_id)
                    if running is not None and running.cancel is not None:
                        log.info("job %s cancelled by the server", running.job_id)
                        running.cancel.set()
        finally:
            heartbeats.cancel()
            outbound.put_nowait(None)
            self._outbound = None

    def _heartbeat_now(self) -> None:
        if self._outbound is not None:
            self._outbound.put_nowait(
                worker_pb2.ConnectRequest(
                    heartbeat=worker_pb2.WorkerHeartbeat(active_job_ids=list(self.running), draining=self.draining)
                )
            )

    async def _heartbeat_loop(self, outbound: asyncio.Queue[worker_pb2.ConnectRequest | None]) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            self._heartbeat_now()

    async def _drain(self) -> None:
        """Shutdown: take no new jobs, let running ones finish within the
        grace period, hand back whatever is still running."""
        self.draining = True
        self._heartbeat_now()
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            log.info("draining %d job(s) for up to %.0f s", len(tasks), self.config.shutdown_grace_seconds)
            _, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_grace_seconds)
            for running in list(self.running.values()):
                if running.task in pending:
                    running.handed_back = True
                    if running.cancel is not None:
                        running.cancel.set()
            if pending:
                await asyncio.wait(pending, timeout=10)

    # -- jobs ------------------------------------------------------------

    def _accept(self, assignment: worker_pb2.JobAssignment) -> None:
        job_id = assignment.job.id
        running = RunningJob(job_id, assignment.job_token)
        self.running[job_id] = running
        running.task = asyncio.create_task(self._run_job(assignment, running), name=f"job-{job_id}")

    async def _run_job(self, assignment: worker_pb2.JobAssignment, running: RunningJob) -> None:
        job = assignment.job
        # The job's span joins the trace of the call that created the job (its
        # assignment's traceparent); the job's calls carry it back to the server.
        with tracing.tracer().start_as_current_span(
            f"job {job.job_type_id}", context=tracing.context_of(assignment.traceparent),
            kind=trace.SpanKind.CONSUMER,
            attributes={"geopera.job_id": job.id, "geopera.job_type": job.job_type_id,
                        "geopera.attempt": assignment.attempt},
        ):  # fmt: skip
            await self._run_traced_job(assignment, running)

    async def _run_traced_job(self, assignment: worker_pb2.JobAssignment, running: RunningJob) -> None:
        import threading

        job = assignment.job
        assert self._channel is not None  # opened by run() before any session or job
        stub = worker_pb2_grpc.WorkerServiceStub(self._channel)
        metadata = self._metadata(assignment.job_token)
        traceparent = tracing.current_traceparent()
        if traceparent:
            metadata = (*metadata, ("traceparent", traceparent))
        workdir = self._workdir / f"{job.id}-{assignment.attempt}"
        workdir.mkdir(parents=True, exist_ok=True)
        running.cancel = threading.Event()
        reporter = ProgressReporter(stub, job.id, metadata, running.cancel)
        logs = JobLogSender(stub, job.id, metadata, JobLogBuffer())
        logs.start()
        try:
            with capturing(logs.buffer):  # what this task and the plugin's thread log goes to the job
                await self._attempt(assignment, running, stub, metadata, workdir, reporter, logs)
        finally:
            await logs.stop()

    async def _attempt(
        self, assignment: worker_pb2.JobAssignment, running: RunningJob, stub: Any, metadata: Any, workdir: Path,
        reporter: ProgressReporter, logs: JobLogSender,
    ) -> None:  # fmt: skip
        job = assignment.job
        try:
            if self.draining:
                running.handed_back = True
                raise JobCancelled(job.id)
            plugin_cls = self.plugins.get(job.job_type_id)
            if plugin_cls is None:
                raise JobFailed(
                    "UNKNOWN_JOB_TYPE", f"this worker has no plugin for {job.job_type_id!r}", retryable=True
                )
            try:
                params = plugin_cls.input_model.model_validate(_struct_dict(job.input_params))
            except ValidationError as err:
                raise JobFailed("INVALID_JOB_PARAMS", str(err)[:1000]) from err
            # "started" (which moves the job to RUNNING) goes out while the
            # sources are fetched and the plugin runs; the reporter keeps order.
            reporter.start(first=(0.0, "started"))
            sources = await self._sources(assignment, workdir, metadata)
            ctx = JobContext(
                job_id=job.id,
                attempt=assignment.attempt,
                project_id=job.project_id,
                target_collection_id=job.target_collection_id,
                sources=sources,
                workdir=workdir,
                _progress=reporter.threadsafe(asyncio.get_running_loop()),
                _cancel=running.cancel,
            )
            plugin: JobPlugin = plugin_cls()
            try:
                outputs = await asyncio.to_thread(plugin.run, params, ctx)
            except RasterError as err:
                # Not turned into JobFailed by the plugin: unreadable or unsuitable data stays
                # so on every attempt; only a failed write (disk full...) may pass next time.
                raise JobFailed(err.reason, err.message[:1000], retryable=err.reason == COG_WRITE_FAILED) from err
            await reporter.stop()
            if running.cancel.is_set():
                raise JobCancelled(job.id)
            await logs.flush()  # the records come before the job's end
            try:
                await register_outputs(stub, job.id, metadata, outputs, presigned=assignment.presigned_uploads)
            except aio.AioRpcError as err:
                if err.code() not in OUTPUTS_REFUSED_CODES or error_reason(err) == "INCOMPLETE_UPLOAD":
                    raise
                log.warning("job %s: outputs refused (%s: %s); the server ended the attempt",
                            job.id, error_reason(err), err.details())  # fmt: skip
                return
            count = len(outputs.files) if isinstance(outputs, AnalyticsAnswer) else len(outputs)
            made = f"{count} {'file' if isinstance(outputs, AnalyticsAnswer) else 'output'}(s)"
            log.info("job %s succeeded with %s", job.id, made)
        except JobCancelled:
            if running.handed_back:
                await logs.flush()
                release = worker_pb2.ReleaseJobRequest(job_id=job.id, reason="worker shutting down")
                await self._call(stub.ReleaseJob, release, metadata)
                log.info("job %s handed back", job.id)
        except JobFailed as err:
            await self._fail(stub, metadata, logs, job.id, err.reason, err.message, err.retryable)
        except aio.AioRpcError as err:
            # A call for the job (sources, outputs) failed for good: report it with
            # the server's reason, asking for another attempt only after a transient fault.
            log.warning("job %s: %s %s", job.id, err.code().name, err.details())
            if err.code() != grpc.StatusCode.FAILED_PRECONDITION:  # else the attempt is over: nothing to report
                message = f"{err.code().name}: {err.details() or ''}"[:1000]
                await self._fail(
                    stub, metadata, logs, job.id, error_reason(err), message, err.code() in TRANSIENT_CODES
                )
        except Exception as err:
            log.exception("job %s crashed", job.id)
            await self._fail(stub, metadata, logs, job.id, "WORKER_ERROR", f"{type(err).__name__}: {err}"[:1000], True)
        finally:
            await reporter.stop()
            self.running.pop(job.id, None)
            shutil.rmtree(workdir, ignore_errors=True)

    async def _fail(
        self, stub: Any, metadata: Any, logs: JobLogSender, job_id: str, reason: str, message: str, retryable: bool
    ) -> None:
        """Report the failure, after its record (level ERROR) and every earlier one reached the job's log."""
        log.error("job %s failed: %s: %s", job_id, reason, message, extra={"reason": reason, "retryable": retryable})
        trace.get_current_span().set_status(trace.StatusCode.ERROR, reason)
        await logs.flush()
        request = worker_pb2.ReportFailureRequest(job_id=job_id, reason=reason, message=message, retryable=retryable)
        await self._call(stub.ReportFailure, request, metadata)

    async def _call(self, method: Any, request: Any, metadata: Any) -> Any:
        try:
            return await resending(lambda: method(request, metadata=metadata, timeout=30))
        except aio.AioRpcError as err:
            log.warning("%s: %s %s", type(request).__name__, err.code().name, err.details())
            return None

    async def _sources(
        self, assignment: worker_pb2.JobAssignment, workdir: Path, metadata: Any
    ) -> dict[str, SourceItem]:
        locations = {(loc.item_id, loc.asset_key): loc for loc in assignment.source_assets}
        assert self._channel is not None  # opened by run() before any session or job
        kernel = kernel_pb2_grpc.KernelServiceStub(self._channel)
        sources = {}
        for item in assignment.source_items:
            assets = {}
            for key, asset in item.assets.items():
                location = locations.get((item.id, key))
                path = location.storage_uri if location is not None and self.config.shared_storage else ""
                if not path or not os.access(path, os.R_OK):
                    target = workdir / f"src-{item.id}-{key}.tif"
                    url = location.download_url if location is not None else ""
                    path = str(await download_asset(kernel, asset.href, target, metadata, url=url, sha256=asset.sha256))
                assets[key] = SourceAsset(
                    key=key,
                    path=path,
                    media_type=asset.media_type,
                    roles=list(asset.roles),
                    bands=[json_format.MessageToDict(b, preserving_proto_field_name=True) for b in asset.bands],
                )
            sources[item.id] = SourceItem(
                id=item.id,
                name=item.name,
                collection_id=item.collection_id,
                datetime=item.datetime.ToDatetime(tzinfo=UTC),
                geometry=_struct_dict(item.geometry),
                properties=_struct_dict(item.properties),
                assets=assets,
            )
        return sources
