"""Retry policy: exponential backoff with jitter, on UNAVAILABLE only."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import grpc

from geopera_sdk._errors import GeoperaError

# Reasons with which the server says it did not run the call at all, so even a
# non-idempotent write may be sent again.
NOT_PROCESSED_REASONS = frozenset({"NOT_READY"})


@dataclass(frozen=True)
class RetryPolicy:
    """How a call that fails UNAVAILABLE is retried.

    `max_attempts` bounds the attempts of one logical call (1 = no retry);
    `total_timeout` bounds its wall time, attempts and backoff included (None =
    unbounded). The n-th backoff is a random duration in
    `[d/2, d]` with `d = min(max_backoff, initial_backoff * multiplier**(n-1))`.
    Streams (watch, download) count consecutive failures without progress.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.25
    max_backoff: float = 8.0
    multiplier: float = 2.0
    total_timeout: float | None = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)


def as_policy(retries: int | RetryPolicy | None) -> RetryPolicy:
    """`retries` as given to a client: a policy, a number of retries, or None/0 for none."""
    if isinstance(retries, RetryPolicy):
        return retries
    if not retries:
        return NO_RETRY
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise TypeError("retries must be a RetryPolicy or a non-negative int")
    return RetryPolicy(max_attempts=retries + 1)


def is_retryable(error: GeoperaError, *, safe: bool) -> bool:
    """UNAVAILABLE only; a call that is not safe to repeat only when the server
    says it did not process it."""
    if error.code != grpc.StatusCode.UNAVAILABLE:
        return False
    return safe or error.reason in NOT_PROCESSED_REASONS


class Attempts:
    """Bookkeeping of one logical call: attempt count and overall deadline."""

    def __init__(self, policy: RetryPolicy, timeout: float | None = None, *, stream: bool = False) -> None:
        self.policy = policy
        self.count = 0
        # A stream (watch, download) may legitimately outlast total_timeout:
        # only the caller's timeout bounds it.
        limits = [t for t in (None if stream else policy.total_timeout, timeout) if t is not None]
        self.deadline = time.monotonic() + min(limits) if limits else None

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def attempt_timeout(self, per_attempt: float | None) -> float | None:
        remaining = self.remaining()
        if per_attempt is None:
            return remaining
        return per_attempt if remaining is None else min(per_attempt, remaining)

    def next_delay(self, error: GeoperaError, *, safe: bool) -> float | None:
        """After a failed attempt: seconds to wait before the next one, or None to give up."""
        self.count += 1
        if self.count >= self.policy.max_attempts or not is_retryable(error, safe=safe):
            return None
        delay = self.policy.backoff(self.count)
        remaining = self.remaining()
        if remaining is not None and delay >= remaining:
            return None
        return delay

    def progressed(self) -> None:
        """A stream made progress: failures are counted afresh."""
        self.count = 0
