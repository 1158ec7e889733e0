"""Built-in job plugins. Register them all with ``for plugin in builtin_plugins(): registry.register(plugin)``."""

from __future__ import annotations

from raster.job_types import BathymetryInput, ClipInput
from worker.plugin import JobPlugin
from worker.plugins.bathymetry import BathymetryPlugin
from worker.plugins.clip import ClipPlugin

__all__ = ["BathymetryInput", "BathymetryPlugin", "ClipInput", "ClipPlugin", "builtin_plugins"]


def builtin_plugins() -> list[type[JobPlugin]]:
    """Every plugin shipped with the worker, sorted by job type id."""
    return [BathymetryPlugin, ClipPlugin]
