"""What a caller may still send, and how long a new send would queue."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RateBudget:
    """A token bucket of requests, as the caller sees it now."""

    per_second: float
    burst: int
    remaining: int
    full_in_ms: int


@dataclass(frozen=True, slots=True)
class ChannelQuota:
    channel_id: str
    contact_type: str
    tps: int
    max_in_flight: int
    in_flight: int
    queue_depth: int
    estimated_wait_ms: int
    scheduled: int


@dataclass(frozen=True)
class QueueAhead:
    # channel -> messages that go before a new send: due ones of its priority
    # or higher, and those claimed and not answered yet.
    ahead: Mapping[str, int] = field(default_factory=dict)
    # channel -> messages waiting for a later send time.
    scheduled: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Quota:
    rate: RateBudget
    channels: tuple[ChannelQuota, ...]


def estimated_wait_ms(queue_depth: int, tps: int) -> int:
    """How long the queue ahead takes to drain at the channel's pace.

    An unpaced channel goes as fast as its provider answers, which the hub
    cannot promise, so it gives no estimate (0).
    """
    if tps <= 0 or queue_depth <= 0:
        return 0
    return math.ceil(queue_depth * 1000 / tps)
