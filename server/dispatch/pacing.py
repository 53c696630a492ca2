"""Per-channel send pacing, so no channel exceeds its configured TPS."""

from __future__ import annotations

import asyncio


class Pacer:
    """Spaces sends at least 1/tps apart.

    A token bucket with a burst of one: a deeper bucket would let a burst of
    tps sends follow a full second of sends, doubling the rate a provider sees.
    """

    def __init__(self, tps: float) -> None:
        self._interval = 1.0 / tps
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            now = loop.time()
            start = max(now, self._next)
            self._next = start + self._interval
        delay = start - now
        if delay > 0:
            await asyncio.sleep(delay)
