"""Built-in job plugins. Register them all with ``for plugin in builtin_plugins(): registry.register(plugin)``."""

from __future__ import annotations

from geopera_kernel.raster.job_types import BathymetryInput, ClipInput
from geopera_kernel.worker.plugin import JobPlugin
from geopera_kernel.worker.plugins.analytics import AnalyticsPlugin
from geopera_kernel.worker.plugins.bathymetry import BathymetryPlugin
from geopera_kernel.worker.plugins.clip import ClipPlugin

__all__ = ["AnalyticsPlugin", "BathymetryInput", "BathymetryPlugin", "ClipInput", "ClipPlugin", "builtin_plugins"]


def builtin_plugins() -> list[type[JobPlugin]]:
    """Every plugin shipped with the worker, sorted by job type id."""
    return [AnalyticsPlugin, BathymetryPlugin, ClipPlugin]
