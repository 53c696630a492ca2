"""Periodic clean-up: expired idempotency keys, old webhooks, events past retention."""

from __future__ import annotations

import logging
from typing import Protocol

from server.aio import IDLE, LoopWorker, WorkerLoop

log = logging.getLogger(__name__)


class Retention(Protocol):
    async def prune(self) -> None: ...

    async def prune_events(self, retention_ms: int) -> int: ...


class Housekeeper(LoopWorker):
    def __init__(
        self, store: Retention, *, event_retention_ms: int, interval_s: float = 60.0
    ) -> None:
        self._store = store
        self._retention_ms = event_retention_ms
        self._loop = WorkerLoop(
            "housekeeping", self._round, interval=interval_s, what="housekeeping", logger=log
        )

    async def run_once(self) -> None:
        await self._store.prune()
        await self._store.prune_events(self._retention_ms)

    async def _round(self) -> float | None:
        await self.run_once()
        return IDLE
