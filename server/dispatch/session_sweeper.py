"""Periodic sweep of sessions whose customer went quiet."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from server.aio import cancel_and_wait, supervised

log = logging.getLogger(__name__)


class InactiveSessions(Protocol):
    async def close_inactive_sessions(self, timeout_ms: int) -> int: ...


class InactivitySweeper:
    def __init__(self, store: InactiveSessions, *, timeout_ms: int, interval: float) -> None:
        self._store = store
        self._timeout_ms = timeout_ms
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = supervised(self._run(), "session-sweeper")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def sweep(self) -> int:
        """Close every session past the timeout; a backlog is worked off in rounds."""
        closed = 0
        while found := await self._store.close_inactive_sessions(self._timeout_ms):
            closed += found
        return closed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                closed = await self.sweep()
            except Exception:  # a failed round must not end the sweeping
                log.exception("session inactivity sweep failed")
            else:
                if closed:
                    log.info("closed %d inactive sessions", closed)
