"""Limits on long-lived streams: how many one token holds at once on this
server, and how long a job watch may stay without news."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from geopera_kernel.server.errors import Code, DomainError

DEFAULT_MAX_STREAMS = 16
DEFAULT_WATCH_IDLE_SECONDS = 600.0


class StreamLimiter:
    def __init__(
        self, max_per_principal: int = DEFAULT_MAX_STREAMS, watch_idle_seconds: float = DEFAULT_WATCH_IDLE_SECONDS
    ) -> None:
        self.max_per_principal = max_per_principal
        self.watch_idle_seconds = watch_idle_seconds
        self._open: dict[str, int] = {}

    @contextmanager
    def hold(self, principal_id: str) -> Iterator[None]:
        """One open stream of `principal_id` for the duration of the block."""
        count = self._open.get(principal_id, 0)
        if count >= self.max_per_principal:
            raise DomainError(
                Code.RESOURCE_EXHAUSTED,
                "TOO_MANY_STREAMS",
                f"this token already holds {count} open streams (WatchJob, UploadAsset, DownloadAsset) "
                "on this server; close one or wait for it to end",
                metadata={"max_streams": str(self.max_per_principal)},
            )
        self._open[principal_id] = count + 1
        try:
            yield
        finally:
            remaining = self._open[principal_id] - 1
            if remaining:
                self._open[principal_id] = remaining
            else:
                del self._open[principal_id]

    def open_streams(self, principal_id: str) -> int:
        return self._open.get(principal_id, 0)
