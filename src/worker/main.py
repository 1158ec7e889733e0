"""`geopera worker`: run job plugins for a kernel server.

    geopera worker --server 127.0.0.1:50051 --token $WORKER_TOKEN [--capacity 2]
                   [--plugins geopera_kernel.worker.plugins,my_package.my_plugins] [--name NAME]
                   [--tls | --tls-ca ca.pem] [--analytics-plugins my_package.my_methods]

Every flag has a `GEOPERA_*` environment variable. A plugin module exposes
`PLUGINS` (a list of `JobPlugin` classes) or `builtin_plugins()`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from pathlib import Path

from geopera_kernel.raster import configure_limits as configure_raster_limits
from geopera_kernel.raster import raster_limits
from geopera_kernel.raster.job_types import ANALYTICS
from geopera_kernel.raster.logs import configure_logging
from geopera_kernel.raster.tracing import configure_tracing, shutdown_tracing
from geopera_kernel.worker.lifetime import exit_with_parent
from geopera_kernel.worker.memory import return_large_buffers
from geopera_kernel.worker.plugin import PluginRegistry
from geopera_kernel.worker.plugins.analytics import configure_methods as configure_analytics_methods
from geopera_kernel.worker.runtime import Worker, WorkerConfig

DEFAULT_PLUGINS = "geopera_kernel.worker.plugins"


def load_plugins(spec: str) -> PluginRegistry:
    registry = PluginRegistry()
    for module_name in filter(None, (part.strip() for part in spec.split(","))):
        module = importlib.import_module(module_name)
        plugins = getattr(module, "PLUGINS", None)
        if plugins is None and hasattr(module, "builtin_plugins"):
            plugins = module.builtin_plugins()
        if plugins is None:
            raise SystemExit(f"plugin module {module_name} has no PLUGINS list")
        for plugin in plugins:
            registry.register(plugin)
    return registry


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="geopera worker", description="Run job plugins for a Geopera kernel")
    parser.add_argument("--server", default=env("GEOPERA_SERVER", "127.0.0.1:50051"), help="[GEOPERA_SERVER]")
    parser.add_argument("--token", default=env("GEOPERA_WORKER_TOKEN"), help="worker credential [GEOPERA_WORKER_TOKEN]")
    parser.add_argument("--capacity", type=int, default=int(env("GEOPERA_WORKER_CAPACITY", "2")))
    parser.add_argument("--name", default=env("GEOPERA_WORKER_NAME", ""))
    parser.add_argument("--plugins", default=env("GEOPERA_WORKER_PLUGINS", DEFAULT_PLUGINS),
                        help="comma-separated plugin modules [GEOPERA_WORKER_PLUGINS]")  # fmt: skip
    parser.add_argument(
        "--workdir",
        default=env("GEOPERA_WORKER_DIR"),
        help="where the worker makes its private scratch folder (removed at exit) [GEOPERA_WORKER_DIR]",
    )
    parser.add_argument("--grace", type=float, default=float(env("GEOPERA_WORKER_GRACE", "30")),
                        help="seconds running jobs get to finish on SIGTERM before they are handed back")  # fmt: skip
    parser.add_argument("--no-shared-storage", action="store_true",
                        default=env("GEOPERA_WORKER_SHARED_STORAGE", "1") == "0",
                        help="always download sources instead of opening the server's storage paths "
                        "[GEOPERA_WORKER_SHARED_STORAGE=0]")  # fmt: skip
    parser.add_argument("--parent-pid", type=int, default=int(env("GEOPERA_WORKER_PARENT_PID", "0")),
                        help="stop when this process (the one that started the worker) exits "
                        "[GEOPERA_WORKER_PARENT_PID]")  # fmt: skip
    parser.add_argument("--tls", action="store_true", default=env("GEOPERA_TLS", "") in ("1", "true"),
                        help="connect over TLS, trusting the system roots [GEOPERA_TLS=1]")  # fmt: skip
    parser.add_argument("--tls-ca", default=env("GEOPERA_TLS_CA"),
                        help="connect over TLS, trusting these PEM roots [GEOPERA_TLS_CA]")  # fmt: skip
    parser.add_argument("--max-raster-pixels", type=int, default=int(env("GEOPERA_MAX_RASTER_PIXELS", "0")),
                        help="largest source raster, width x height (0: 2^28) [GEOPERA_MAX_RASTER_PIXELS]")  # fmt: skip
    parser.add_argument("--max-raster-samples", type=int, default=int(env("GEOPERA_MAX_RASTER_SAMPLES", "0")),
                        help="largest source raster, width x height x bands (0: 2^31) "
                        "[GEOPERA_MAX_RASTER_SAMPLES]")  # fmt: skip
    parser.add_argument("--analytics-plugins", default=env("GEOPERA_ANALYTICS_PLUGINS", ""),
                        help="extra analytics method modules for analytics jobs, as the server's "
                        "[GEOPERA_ANALYTICS_PLUGINS]")  # fmt: skip
    parser.add_argument("--log-level", default=env("GEOPERA_LOG_LEVEL", "INFO"))
    return parser


async def _serve(worker: Worker) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await worker.run(stop)


def main(argv: list[str] | None = None) -> int:
    # GDAL's block cache defaults to 5% of the host's RAM per process; a worker
    # runs several jobs at once, so bound it (an explicit setting wins).
    os.environ.setdefault("GDAL_CACHEMAX", "64")
    # Jobs' multi-MiB buffers go back to the OS when freed (see geopera_kernel.worker.memory).
    return_large_buffers()
    args = build_parser().parse_args(argv)
    try:
        configure_tracing("geopera-worker")  # OTEL_* variables; nothing when no exporter is named
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    if args.parent_pid and not exit_with_parent(args.parent_pid):
        logging.getLogger("geopera.worker").error("the server that started this worker has already exited")
        return 1
    if not args.token:
        print("error: a worker token is required (--token or GEOPERA_WORKER_TOKEN)", file=sys.stderr)
        return 2
    try:
        tls_roots = Path(args.tls_ca).read_bytes() if args.tls_ca else None
    except OSError as err:
        print(f"error: cannot read --tls-ca {args.tls_ca}: {err.strerror}", file=sys.stderr)
        return 2
    # Sources are client data: over these limits a job fails with RASTER_TOO_LARGE.
    configure_raster_limits(raster_limits(args.max_raster_pixels, args.max_raster_samples))
    config = WorkerConfig(
        server=args.server,
        tls=args.tls or tls_roots is not None,
        tls_root_certificates=tls_roots,
        token=args.token,
        capacity=args.capacity,
        name=args.name,
        workdir=Path(args.workdir) if args.workdir else None,
        shutdown_grace_seconds=args.grace,
        shared_storage=not args.no_shared_storage,
    )
    plugins = load_plugins(args.plugins)
    if plugins.get(ANALYTICS.id) is not None:
        configure_analytics_methods(args.analytics_plugins)
    worker = Worker(config, plugins)
    try:
        asyncio.run(_serve(worker))
    except Exception as err:
        logging.getLogger("geopera.worker").error("worker stopped: %s", err)
        return 1
    finally:
        shutdown_tracing()
    return 0


if __name__ == "__main__":
    sys.exit(main())
