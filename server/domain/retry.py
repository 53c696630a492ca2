"""Retry timing for retryable provider failures."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_ms: int = 1_000
    cap_ms: int = 300_000
    max_attempts: int = 8

    def delay_ms(
        self, attempt: int, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> int:
        """Exponential backoff with full jitter; a provider's Retry-After is a floor."""
        ceiling = min(self.cap_ms, self.base_ms * 2 ** max(0, attempt - 1))
        delay = int((rng or random).uniform(ceiling / 2, ceiling))
        if retry_after_s is not None:
            delay = max(delay, int(retry_after_s * 1000))
        return delay
