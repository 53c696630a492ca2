"""Periodic sweep of sessions whose customer went quiet."""

from __future__ import annotations

import logging
from typing import Protocol

from server.aio import IDLE, LoopWorker, WorkerLoop

log = logging.getLogger(__name__)


class InactiveSessions(Protocol):
    async def close_inactive_sessions(self, timeout_ms: int) -> int: ...


class InactivitySweeper(LoopWorker):
    def __init__(self, store: InactiveSessions, *, timeout_ms: int, interval: float) -> None:
        self._store = store
        self._timeout_ms = timeout_ms
        self._loop = WorkerLoop(
            "session-sweeper",
            self._round,
            interval=interval,
            idle_first=True,
            what="session inactivity sweep",
            logger=log,
        )

    async def sweep(self) -> int:
        """Close every session past the timeout; a backlog is worked off in rounds."""
        closed = 0
        while found := await self._store.close_inactive_sessions(self._timeout_ms):
            closed += found
        return closed

    async def _round(self) -> float | None:
        closed = await self.sweep()
        if closed:
            log.info("closed %d inactive sessions", closed)
        return IDLE
