"""Per-tenant request rate (token bucket) and concurrent stream count."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from server.domain.quota import RateBudget


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per tenant: `rate` tokens a second, holding at most `burst`."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, tenant: str) -> float:
        """0 when the call may go ahead, else the seconds until a token is due."""
        now = self._clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def budget(self, tenant: str) -> RateBudget:
        """The tenant's bucket as of now, without taking from it."""
        now = self._clock()
        bucket = self._buckets.get(tenant)
        tokens = (
            self._burst
            if bucket is None
            else min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
        )
        return RateBudget(
            per_second=self._rate,
            burst=int(self._burst),
            remaining=int(tokens),
            full_in_ms=math.ceil((self._burst - tokens) / self._rate * 1000),
        )


def retry_after_seconds(wait_s: float) -> int:
    """Retry-After is whole seconds; never tell a client 0 while it is refused."""
    return max(1, math.ceil(wait_s))


class StreamCounter:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: dict[str, int] = {}

    def enter(self, tenant: str) -> bool:
        current = self._open.get(tenant, 0)
        if current >= self._limit:
            return False
        self._open[tenant] = current + 1
        return True

    def leave(self, tenant: str) -> None:
        left = self._open.get(tenant, 0) - 1
        if left > 0:
            self._open[tenant] = left
        else:
            self._open.pop(tenant, None)

    def open_for(self, tenant: str) -> int:
        return self._open.get(tenant, 0)
