"""Deadline fallback: fires a message's next leg when its current one runs out of time.

The legs and their deadlines are in the store, so a restart loses none and
any replica may fire a due leg; the store's conditional claim makes sure only
one does. A fired leg is an ordinary due message on the next leg's channel,
which the dispatcher then sends. Refusals fire the next leg at once, in the
same commit that records them (the dispatcher's Outbox.finish).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from server.aio import LoopWorker, WorkerLoop
from server.storage.fallback import Fired
from server.storage.faults import is_unavailable
from server.storage.tx import now_ms
from server.telemetry.logs import event

log = logging.getLogger(__name__)
BATCH = 100


class FallbackDeadlines(Protocol):
    async def fire_due_fallbacks(self, limit: int = 100) -> list[Fired]: ...

    async def next_fallback_due(self) -> int | None: ...


class FallbackSweeper(LoopWorker):
    def __init__(
        self,
        store: FallbackDeadlines,
        *,
        wake_dispatcher: Callable[[], None],
        interval: float = 0.25,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._wake_dispatcher = wake_dispatcher
        # The longest a due leg waits for a look: a deadline armed on another
        # replica is only seen at the next look.
        self._interval = interval
        self._clock = clock
        self._loop = WorkerLoop(
            "fallback-sweeper",
            self._round,
            interval=interval,
            expected=is_unavailable,
            what="fallback sweep",
            logger=log,
        )

    async def sweep(self) -> int:
        """Fire every due leg; returns how many fired here."""
        fired = 0
        while True:
            found = await self._store.fire_due_fallbacks(BATCH)
            for leg in found:
                event(
                    log,
                    "fallback.fired",
                    "%s: leg %d fired on %s",
                    leg.message_id,
                    leg.leg,
                    leg.channel_id,
                    message_id=leg.message_id,
                    leg=leg.leg,
                    channel=leg.channel_id,
                )
            fired += len(found)
            if found:
                self._wake_dispatcher()
            if len(found) < BATCH:
                return fired

    async def _round(self) -> float | None:
        """Fire what is due, then wait until the next deadline known here, at most an interval."""
        await self.sweep()
        due = await self._store.next_fallback_due()
        if due is None:
            return self._interval
        return min(self._interval, max(0.01, (due - self._clock()) / 1000))
