"""The "analytics" job (``geopera_kernel.raster.job_types.ANALYTICS``): an analytics method run on a
worker for `analytics.submit`, with the engine the server's synchronous call uses
(``geopera_kernel.analytics``) over the job's sources as the runtime fetched them.

The methods are the worker's registry: the built-in ones plus the modules of
``--analytics-plugins`` / GEOPERA_ANALYTICS_PLUGINS, which must list the server's for
its plugin methods to run as jobs (``configure_methods``). The answer is the method's
JSON-ready result and its files; the server renders and stores the rest.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel

from geopera_kernel.analytics import AnalyticsContext, ItemView, MethodRegistry, load_registry
from geopera_kernel.analytics.registry import json_safe
from geopera_kernel.raster.domain_errors import DomainError
from geopera_kernel.raster.job_types import ANALYTICS, AnalyticsJobInput
from geopera_kernel.worker.plugin import AnalyticsAnswer, ArtifactFile, JobContext, JobFailed, JobPlugin

log = logging.getLogger("geopera.worker.analytics")

# Threads one job may decode blocks with (the server's call uses as many); a worker
# runs `capacity` jobs at once.
THREADS_PER_JOB = 2

_methods: MethodRegistry | None = None


def configure_methods(plugins: str) -> MethodRegistry:
    """Load the methods analytics jobs run on this worker (once, at start: a plugin
    module that fails to import stops the worker, rather than each job)."""
    global _methods
    _methods = load_registry(plugins)
    return _methods


def methods() -> MethodRegistry:
    return _methods if _methods is not None else configure_methods("")


class AnalyticsPlugin(JobPlugin, definition=ANALYTICS):
    def run(self, params: BaseModel, ctx: JobContext) -> AnalyticsAnswer:
        request = AnalyticsJobInput.model_validate(params, from_attributes=True)
        registry = methods()
        if request.operation not in registry:
            raise JobFailed(
                "UNKNOWN_ANALYTICS_OPERATION",
                f"this worker has no analytics method {request.operation[:100]!r}: list its module in the "
                "worker's GEOPERA_ANALYTICS_PLUGINS (--analytics-plugins) as in the server's",
            )
        workdir = Path(ctx.workdir)
        context = AnalyticsContext(
            items={
                item_id: ItemView.of(source, source.assets.values(), lambda a: a.path)
                for item_id, source in ctx.sources.items()
            },
            artifact_dir=workdir / "artifacts",
            workers=THREADS_PER_JOB,
            cancel_check=ctx.check_cancelled,  # raises JobCancelled between blocks
            scratch_dir=workdir / "scratch",
        )
        ctx.report_progress(0.0, f"running {request.operation}")
        try:
            result = registry.run(request.operation, request.params, context)
        except DomainError as error:
            # The method's own refusal (MISSING_BANDS, ...): the same on every attempt.
            raise JobFailed(error.reason, error.message[:1000]) from error
        log.info("%s computed, %d file(s)", request.operation, len(context.artifacts))
        ctx.report_progress(1.0, f"{request.operation} computed")
        files = [ArtifactFile(a.key, a.path, a.media_type, a.title) for a in context.artifacts]
        return AnalyticsAnswer(request.operation, json_safe(result), files)


# `geopera worker --plugins geopera_kernel.worker.plugins.analytics`: a worker for analytics jobs only.
PLUGINS = [AnalyticsPlugin]
