"""The retry backoff job retries and webhook retries share (server/backoff.py)."""

from __future__ import annotations

from geopera_kernel.server.backoff import Backoff


def test_the_delay_doubles_per_attempt_up_to_the_cap_within_the_jitter():
    backoff = Backoff(base_seconds=2.0, max_seconds=10.0, jitter=(0.5, 1.0))
    for attempt, undelayed in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (60, 10.0), (5000, 10.0)]:
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0.5 * undelayed <= d <= undelayed for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > 0.1 * undelayed  # jittered, not fixed
