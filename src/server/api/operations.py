"""The operation table: every operation `Execute` can run, in one registry
(built by the composition root and handed to each projection)."""

from __future__ import annotations

from geopera_kernel.server.api import ops_analytics, ops_batches, ops_catalog, ops_processing
from geopera_kernel.server.api.registry import OperationRegistry


def build_registry() -> OperationRegistry:
    registry = OperationRegistry()
    operations = (
        *ops_catalog.OPERATIONS,
        *ops_processing.OPERATIONS,
        *ops_batches.OPERATIONS,
        *ops_analytics.OPERATIONS,
    )
    for operation in operations:
        registry.register(operation)
    return registry
