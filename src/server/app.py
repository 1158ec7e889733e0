"""Composition root: wires the pool, storage, services, registry and servicers,
and runs the gRPC server until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from google.rpc import error_details_pb2, status_pb2  # noqa: F401  (registers the types for reflection)
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from geopera.v1 import (  # noqa: F401  (imports register every payload type for reflection)
    analytics_pb2,
    auth_pb2,
    catalog_pb2,
    credits_pb2,
    errors_pb2,
    kernel_pb2,
    kernel_pb2_grpc,
    processing_pb2,
    resources_pb2,
    webhooks_pb2,
    worker_pb2,
    worker_pb2_grpc,
)
from geopera_kernel.analytics import MethodRegistry, load_registry
from geopera_kernel.raster import configure_limits as configure_raster_limits
from geopera_kernel.raster import raster_limits
from geopera_kernel.raster.job_types import ANALYTICS, CLIP
from geopera_kernel.server.api import convert
from geopera_kernel.server.api import reflection as documented_reflection
from geopera_kernel.server.api.execute import Executor
from geopera_kernel.server.api.kernel import KernelServicer, execute_operation
from geopera_kernel.server.api.operations import build_registry
from geopera_kernel.server.api.registration import add_servicer
from geopera_kernel.server.api.webhook_body import webhook_body
from geopera_kernel.server.api.worker import WorkerServicer
from geopera_kernel.server.auth import TokenService
from geopera_kernel.server.config import Settings
from geopera_kernel.server.domain import idempotency
from geopera_kernel.server.domain.analytics import AnalyticsService
from geopera_kernel.server.domain.catalog import CatalogLimits, CatalogService, ItemRenderer
from geopera_kernel.server.domain.credits import CreditService
from geopera_kernel.server.domain.jobs import (
    JOB_RETRY_BACKOFF,
    Dispatcher,
    JobLogCaps,
    JobService,
    JobTypeRecord,
    LeasePolicy,
    Notifications,
)
from geopera_kernel.server.domain.outputs import OutputService
from geopera_kernel.server.domain.quota import StorageQuota
from geopera_kernel.server.domain.raster_work import RasterWorkPool
from geopera_kernel.server.domain.streams import StreamLimiter
from geopera_kernel.server.domain.sweep import StorageSweeper
from geopera_kernel.server.edge.call import Edge
from geopera_kernel.server.edge.interceptor import EdgeInterceptor
from geopera_kernel.server.listen import ListenError, check_ports
from geopera_kernel.server.metrics import CallMetrics
from geopera_kernel.server.pagination import install_page_token_key, load_page_token_key
from geopera_kernel.server.rest.app import RestApi, start_rest
from geopera_kernel.server.services import Services
from geopera_kernel.server.signing import UrlSigner, load_signing_keys
from geopera_kernel.server.storage import BlobStorage, LocalStorage
from geopera_kernel.server.store import connect_database
from geopera_kernel.server.store.database import start_embedded_postgres
from geopera_kernel.server.webhooks.sender import WEBHOOK_RETRY_BACKOFF, SenderPolicy, WebhookSender

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    kernel_pb2.DESCRIPTOR.services_by_name["KernelService"].full_name,
    worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
)
EXECUTE_METHOD = f"/{SERVICE_NAMES[0]}/Execute"


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return start_embedded_postgres(settings.home.resolve())


def open_storage(settings: Settings) -> BlobStorage:
    """The bucket of GEOPERA_STORAGE_URL, else the local storage directory."""
    if settings.storage_url:
        from geopera_kernel.server.storage_s3 import S3Storage  # boto3 only when configured

        return S3Storage(settings.storage_url, settings.home / "scratch", settings.presign_ttl_seconds)
    return LocalStorage(settings.storage_root)


async def build_services(settings: Settings, url: str) -> Services:
    db = await connect_database(url, max_size=settings.db_pool_size)
    install_page_token_key(await load_page_token_key(db, settings.page_token_key))
    signer = UrlSigner(await load_signing_keys(db, settings.signing_keys))
    storage = open_storage(settings)
    tokens = TokenService(db, cache_seconds=settings.token_cache_seconds)
    limits = CatalogLimits(max_upload_bytes=settings.max_upload_bytes)
    quota = StorageQuota(settings.project_quota_bytes)
    configure_raster_limits(raster_limits(settings.max_raster_pixels, settings.max_raster_samples))
    raster_pool = RasterWorkPool(settings.raster_workers or None)
    renderer = ItemRenderer(convert.ITEM_RENDER_KEY, convert.item_bytes)
    catalog = CatalogService(
        db, storage, limits, quota, raster_pool, renderer, item_cache_bytes=settings.item_cache_bytes
    )
    policy = LeasePolicy(
        lease_seconds=settings.lease_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        max_attempts=settings.max_attempts,
        retry_backoff=replace(
            JOB_RETRY_BACKOFF,
            base_seconds=settings.retry_backoff_seconds,
            max_seconds=settings.retry_backoff_max_seconds,
        ),
    )
    jobs = JobService(db, policy)
    jobs.log_caps = JobLogCaps(settings.job_log_max_entries, settings.job_log_max_bytes)
    outputs = OutputService(db, storage, jobs, limits, quota, raster_pool)
    analytics = AnalyticsService(
        db, storage, catalog, load_analytics_methods(settings.analytics_plugins), quota,
        sync_max_pixels=settings.analytics_sync_max_pixels,
    )  # fmt: skip
    streams = StreamLimiter(settings.max_streams_per_token, settings.watch_idle_seconds)
    return Services(
        db, storage, tokens, catalog, CreditService(db), jobs, outputs, Notifications(url), analytics, signer,
        streams, idempotency_key_ttl_seconds=settings.idempotency_key_ttl_seconds,
    )  # fmt: skip


def public_url(settings: Settings, scheme: str, bound_port: int) -> str:
    """GEOPERA_PUBLIC_URL, else the HTTP address this server bound (a wildcard
    host named as loopback: set GEOPERA_PUBLIC_URL behind a proxy or a load balancer)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = settings.http_listen.rsplit(":", 1)[0].strip("[]")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"{scheme}://[{host}]:{bound_port}" if ":" in host else f"{scheme}://{host}:{bound_port}"


def storage_sweeper(settings: Settings, services: Services) -> StorageSweeper:
    return StorageSweeper(
        services.db,
        services.storage,
        grace_seconds=settings.storage_grace_seconds,
        artifact_retention_seconds=settings.artifact_retention_seconds,
    )


def webhook_sender(settings: Settings, services: Services) -> WebhookSender:
    policy = SenderPolicy(
        allow_private=settings.webhooks_allow_private,
        timeout_seconds=settings.webhooks_timeout_seconds,
        retry_backoff=replace(WEBHOOK_RETRY_BACKOFF, base_seconds=settings.webhooks_retry_base_seconds),
        retry_window_seconds=settings.webhooks_retry_window_seconds,
        disable_after=settings.webhooks_disable_after,
    )
    return WebhookSender(services.db, webhook_body, policy)


def load_analytics_methods(plugins: str) -> MethodRegistry:
    """The built-in analytics methods plus those of the plugin modules named
    in GEOPERA_ANALYTICS_PLUGINS: adding a method is one module, no proto change."""
    return load_registry(plugins)


async def register_builtin_job_types(jobs: JobService) -> None:
    # The clip job type the server creates itself (clip.create_from_item).
    await jobs.upsert_job_type(
        JobTypeRecord(
            id=CLIP.id, description=CLIP.description, input_schema=CLIP.input_schema(), cost=CLIP.cost, builtin=True
        )
    )
    # The analytics jobs the server creates (analytics.submit) and workers run; they cost nothing.
    await jobs.upsert_job_type(
        JobTypeRecord(
            id=ANALYTICS.id, description=ANALYTICS.description, input_schema=ANALYTICS.input_schema(),
            cost=ANALYTICS.cost, builtin=True,
        )
    )  # fmt: skip


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Keepalive: ping idle connections every 60 s, drop them after 20 s of
        # silence; accept client pings no more often than every 10 s.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_connection_idle_ms", 30 * 60_000),
        # A second server on a taken port must fail, not share it silently.
        ("grpc.so_reuseport", 0),
    ]


async def serve(settings: Settings, *, on_ready: Callable[[Services, int], Awaitable[None]] | None = None) -> None:
    http_on = bool(settings.http_listen) and settings.http_listen != "off"
    tls = check_ports(settings.listen, settings.http_listen if http_on else None, settings)
    # Before any gRPC object exists: the embedded PostgreSQL's initdb and
    # pg_ctl are forked (not vfork'ed when they switch user), and a fork once
    # gRPC's threads run can abort the child. Blocking is fine: nothing else runs yet.
    url = database_url(settings)
    registry = build_registry()
    # The one transport edge: every RPC of the kernel's services and every HTTP call.
    edge = Edge(CallMetrics(registry.names()))
    interceptor = EdgeInterceptor(edge, SERVICE_NAMES, {EXECUTE_METHOD: execute_operation})
    server = aio.server(interceptors=[interceptor], options=server_options(settings))
    health_servicer = health.aio.HealthServicer()
    kernel = KernelServicer()
    workers = WorkerServicer()
    add_servicer(server, kernel, kernel_pb2.DESCRIPTOR.services_by_name["KernelService"])
    add_servicer(server, workers, worker_pb2.DESCRIPTOR.services_by_name["WorkerService"])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    documented_reflection.enable((*SERVICE_NAMES, health.SERVICE_NAME), server)
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        if tls is None:
            port = server.add_insecure_port(settings.listen)
        else:
            port = server.add_secure_port(settings.listen, tls.grpc_credentials())
    except RuntimeError:  # taken since ensure_free, or not an address of this host
        raise ListenError(f"cannot listen on {settings.listen} (gRPC): address taken or not available") from None
    await server.start()
    host = settings.listen.rsplit(":", 1)[0]
    log.info("listening on %s:%d%s (not ready yet)", host, port, " with TLS" if tls else "")
    rest = RestApi(edge, registry, public_url=settings.public_url, metrics_mode=settings.metrics)
    http_runner, http_port = None, 0
    http_scheme = "https" if tls else "http"
    if http_on:
        try:
            http_runner, http_port = await start_rest(rest, settings.http_listen, tls.ssl_context() if tls else None)
        except OSError as err:
            raise ListenError(f"cannot listen on {settings.http_listen} (HTTP): {err.strerror}") from None
        http_host = settings.http_listen.rsplit(":", 1)[0]
        log.info("HTTP/JSON on %s://%s:%d (OpenAPI at /v1/openapi.json)", http_scheme, http_host, http_port)
    else:
        log.info("HTTP/JSON off: no HTTP port opened (--http-listen / GEOPERA_HTTP_LISTEN is off)")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    services = await build_services(settings, url)
    services.webhooks.allow_private = settings.webhooks_allow_private
    services.public_url = public_url(settings, http_scheme, http_port) if http_on else settings.public_url
    await services.notifications.start()
    await register_builtin_job_types(services.jobs)
    dispatcher = Dispatcher(services.jobs, services.notifications, services.tokens)
    dispatcher.start()
    executor = Executor(registry, services)
    kernel.attach(executor)
    rest.attach(executor)
    workers.attach(services, dispatcher)
    edge.ready(services.tokens)  # calls are served from here on (NOT_READY before)
    background = [
        asyncio.create_task(_every(600, "upload sweep", services.catalog.expire_uploads)),
        asyncio.create_task(_every(1.0, "lease reaper", services.jobs.expire_leases)),
        asyncio.create_task(_every(3600, "idempotency sweep", functools.partial(idempotency.expire_keys, services.db))),
        # Also at start: clears what a crash left (objects of unknown commits, scratch).
        asyncio.create_task(
            _every(settings.sweep_interval_seconds, "storage sweep", storage_sweeper(settings, services).sweep)
        ),
    ]
    if settings.webhooks_send:
        sender = webhook_sender(settings, services)
        services.webhooks.on_enqueue.append(sender.wake)
        services.notifications.on_event.append(sender.wake)
        background.append(asyncio.create_task(sender.run()))
        background.append(asyncio.create_task(_every(3600, "webhook log sweep", sender.expire)))
    if on_ready is not None:
        await on_ready(services, port)
    # What startup built (modules, descriptors, the registry, the pool) lives as long as
    # the process: frozen, the collector never walks it again (bench/RESULTS.md, items_get).
    # No gc.collect() first: it costs ~65 ms per start and finds a few dozen objects.
    gc.freeze()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if settings.port_file is not None:
        _write_atomically(settings.port_file, f"{port}\n{http_port}\n")
    log.info("ready on %s:%d", host, port)
    print(f"GEOPERA_READY {host}:{port}", flush=True)
    if http_runner is not None:
        print(f"GEOPERA_HTTP {http_scheme}://{settings.http_listen.rsplit(':', 1)[0]}:{http_port}", flush=True)

    await stop.wait()
    log.info("stopping: draining calls for up to %.0f s", settings.shutdown_grace_seconds)
    edge.stopping = True  # new calls: UNAVAILABLE SERVER_SHUTTING_DOWN from here on
    await health_servicer.enter_graceful_shutdown()
    services.notifications.close_streams()
    if http_runner is not None:
        await http_runner.cleanup()
    await server.stop(await edge.drain(settings.shutdown_grace_seconds))
    for task in background:
        task.cancel()
    await dispatcher.stop()
    await services.notifications.stop()
    await services.db.close()
    log.info("stopped")


async def _every(seconds: float, what: str, action: Callable[[], Awaitable[object]]) -> None:
    while True:
        try:
            result = await action()
            if result:
                log.info("%s: %s", what, result)
        except Exception:
            log.exception("%s failed", what)
        await asyncio.sleep(seconds)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
