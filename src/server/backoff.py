"""How long a retry waits: exponential backoff with jitter (job attempts, webhook deliveries)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base_seconds: float
    max_seconds: float
    # The capped delay is scaled by a random factor in this range, so that
    # retries of what failed together do not come back together.
    jitter: tuple[float, float]

    def delay(self, attempt: int) -> float:
        """base x 2^(attempt-1) (attempt counts from 1), capped, then jittered."""
        # Past 2^40 any cap has been reached; the power alone would overflow a float in the end.
        doublings = min(max(0, attempt - 1), 40)
        return min(self.max_seconds, self.base_seconds * 2.0**doublings) * random.uniform(*self.jitter)
