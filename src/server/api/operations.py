"""The operation table: every operation `Execute` can run, in one registry."""

from __future__ import annotations

from server.api import ops_catalog
from server.api.registry import OperationRegistry


def build_registry() -> OperationRegistry:
    registry = OperationRegistry()
    for operation in ops_catalog.OPERATIONS:
        registry.register(operation)
    return registry


REGISTRY = build_registry()
