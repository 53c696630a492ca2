"""Per-channel send pacing, so no channel exceeds its configured TPS."""

from __future__ import annotations

import asyncio


class Pacer:
    """Spaces sends at least 1/tps apart, measured from the previous send itself.

    A token bucket with a burst of one. A deeper bucket would let a burst of tps
    sends follow a full second of sends; a fixed schedule would let a late send
    be followed by a short gap. Either puts more than tps sends in some
    one-second window, which is what providers count.
    """

    def __init__(self, tps: float) -> None:
        self._interval = 1.0 / tps
        self._last: float | None = None
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._last is not None:
                due = self._last + self._interval
                # The loop may wake a hair early; never let a send through before its time.
                while (now := loop.time()) < due:  # noqa: ASYNC110 - waiting for a time, not an event
                    await asyncio.sleep(due - now)
            self._last = loop.time()
