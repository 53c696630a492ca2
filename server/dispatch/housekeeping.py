"""Periodic clean-up: expired idempotency keys, old webhooks, events past retention."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from server.aio import cancel_and_wait, supervised

log = logging.getLogger(__name__)


class Retention(Protocol):
    async def prune(self) -> None: ...

    async def prune_events(self, retention_ms: int) -> int: ...


class Housekeeper:
    def __init__(
        self, store: Retention, *, event_retention_ms: int, interval_s: float = 60.0
    ) -> None:
        self._store = store
        self._retention_ms = event_retention_ms
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = supervised(self._run(), "housekeeping")

    async def run_once(self) -> None:
        await self._store.prune()
        await self._store.prune_events(self._retention_ms)

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
