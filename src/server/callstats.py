"""What one call cost below the transport: the time it held a database connection and
the read-through caches it hit or missed (token, item in memory, item render stored in
the database, item proto). The edge (`geopera_kernel.server.edge`) opens a `CallStats` per call and the
access log line reports it (`db_ms`, `db_uses`, `db_batch`, `cache_hits`, `cache_misses`; each only
when there is something to say). Cheap on
purpose: one context variable, two clock reads per connection use, one counter per cache
lookup; code running outside a call (background loops) records nothing, and a task a call
spawns adds to that call's counters (bounded: a count per cache name)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class CallStats:
    db_seconds: float = 0.0
    db_uses: int = 0
    cache_hits: dict[str, int] = field(default_factory=dict)
    cache_misses: dict[str, int] = field(default_factory=dict)
    # For a call that waited on a batched lookup (shared with concurrent calls):
    # how many lookups that batch carried, 1 when only its own; else 0.
    db_batch: int = 0

    def add_log_fields(self, out: dict[str, object]) -> None:
        """Adds what there is to say to the access log line `out`."""
        if self.db_uses:
            out["db_ms"] = round(self.db_seconds * 1000, 3)
            out["db_uses"] = self.db_uses
        if self.db_batch:
            out["db_batch"] = self.db_batch
        if self.cache_hits:
            out["cache_hits"] = self.cache_hits
        if self.cache_misses:
            out["cache_misses"] = self.cache_misses


_current: ContextVar[CallStats | None] = ContextVar("geopera_call_stats", default=None)


def begin() -> CallStats:
    """Start counting for the call running in this task."""
    stats = CallStats()
    _current.set(stats)
    return stats


def cache_lookup(cache: str, hit: bool) -> None:
    stats = _current.get()
    if stats is not None:
        counts = stats.cache_hits if hit else stats.cache_misses
        counts[cache] = counts.get(cache, 0) + 1


def database_used(seconds: float, batch: int = 0) -> None:
    """A pooled connection held `seconds` for this call; `batch`: for a batched
    lookup, the number of lookups it carried (the time is each waiter's wait)."""
    stats = _current.get()
    if stats is not None:
        stats.db_seconds += seconds
        stats.db_uses += 1
        stats.db_batch = max(stats.db_batch, batch)
