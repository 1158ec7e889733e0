"""The server's operation registry, as every projection sees it (built as the
composition root builds it)."""

from geopera_kernel.server.api.operations import build_registry

REGISTRY = build_registry()

__all__ = ["REGISTRY"]
