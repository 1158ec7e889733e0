"""The server's operation registry, as every projection sees it."""

from server.api.operations import REGISTRY

__all__ = ["REGISTRY"]
