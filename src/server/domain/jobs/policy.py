"""How long a worker holds a job without a heartbeat, and how failed attempts retry."""

from __future__ import annotations

from dataclasses import dataclass

from geopera_kernel.server.backoff import Backoff

# GEOPERA_RETRY_BACKOFF_SECONDS and GEOPERA_RETRY_BACKOFF_MAX_SECONDS set its base and cap.
JOB_RETRY_BACKOFF = Backoff(base_seconds=1.0, max_seconds=30.0, jitter=(0.8, 1.2))


@dataclass(frozen=True)
class LeasePolicy:
    lease_seconds: float = 15.0
    heartbeat_seconds: float = 3.0
    max_attempts: int = 3
    retry_backoff: Backoff = JOB_RETRY_BACKOFF
