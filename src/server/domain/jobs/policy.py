"""How long a worker holds a job without a heartbeat, and how failed attempts retry."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class LeasePolicy:
    lease_seconds: float = 15.0
    heartbeat_seconds: float = 3.0
    # Retry backoff: base * 2^(attempt-1), capped, with jitter.
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 30.0
    max_attempts: int = 3

    def backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max_seconds, self.backoff_base_seconds * 2.0 ** max(0, attempt - 1))
        return delay * random.uniform(0.8, 1.2)
