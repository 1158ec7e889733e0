"""The operation table: every operation `Execute` can run, in one registry
(built by the composition root and handed to each projection)."""

from __future__ import annotations

from geopera_kernel.server.api import ops_analytics, ops_batches, ops_catalog, ops_processing, ops_webhooks
from geopera_kernel.server.api.registry import OperationRegistry


def build_registry() -> OperationRegistry:
    registry = OperationRegistry()
    for ops in (ops_catalog, ops_processing, ops_batches, ops_analytics, ops_webhooks):
        for operation in ops.OPERATIONS:
            registry.register(operation)
    return registry
