"""Analytics methods: plugins computing statistics over catalogue rasters.

No gRPC, database or generated-code imports: the server resolves items and access, calls
``registry.run`` (or ``validate`` + ``execute``) in a worker thread, and stores artifacts.
"""

import importlib

from geopera_kernel.analytics.base import AnalyticsContext, AnalyticsMethod, Artifact, AssetView, ItemView
from geopera_kernel.analytics.change import ChangeDetection
from geopera_kernel.analytics.registry import MethodRegistry
from geopera_kernel.analytics.timeseries import TimeSeries
from geopera_kernel.analytics.zonal import ZonalStats


def default_registry() -> MethodRegistry:
    """A new registry holding the built-in methods."""
    methods = MethodRegistry()
    for method in (ZonalStats, TimeSeries, ChangeDetection):
        methods.register(method)
    return methods


def load_registry(plugins: str) -> MethodRegistry:
    """The built-in methods plus those of the plugin modules named in ``plugins``
    (GEOPERA_ANALYTICS_PLUGINS: comma-separated modules, each with a ``METHODS`` list).
    The server and the worker both build theirs with it, so an analytics job runs the
    methods the synchronous call runs."""
    methods = default_registry()
    for module_name in filter(None, (part.strip() for part in plugins.split(","))):
        module = importlib.import_module(module_name)
        for method in getattr(module, "METHODS", ()):
            methods.register(method)
    return methods


# The built-in methods, for code that calls them in-process (tests, benchmarks). The server
# builds its own registry (``load_registry``, as the worker does): a method reaches every
# client by being listed in a module's ``METHODS`` named in GEOPERA_ANALYTICS_PLUGINS.
registry = default_registry()

__all__ = [
    "AnalyticsContext",
    "AnalyticsMethod",
    "Artifact",
    "AssetView",
    "ChangeDetection",
    "ItemView",
    "MethodRegistry",
    "TimeSeries",
    "ZonalStats",
    "default_registry",
    "load_registry",
    "registry",
]
