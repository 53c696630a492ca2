"""Periodic sweeps: sessions whose customer went quiet, receipts that never came."""

from __future__ import annotations

import asyncio
import logging

from server.aio import cancel_and_wait
from server.storage.store import SqlStore

log = logging.getLogger(__name__)


class InactivitySweeper:
    def __init__(self, store: SqlStore, *, timeout_ms: int, interval: float) -> None:
        self._store = store
        self._timeout_ms = timeout_ms
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="session-sweeper")

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


class ReceiptTimeoutSweeper:
    """Moves messages stuck in SUBMITTED past the receipt timeout to EXPIRED.

    A provider that took a message and never reported on it (a receipt lost on
    its side or ours) would otherwise leave it short of a final status forever.
    """

    def __init__(self, store: SqlStore, *, timeout_ms: int, interval: float) -> None:
        self._store = store
        self._timeout_ms = timeout_ms
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="receipt-sweeper")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def sweep(self) -> int:
        expired = 0
        while found := await self._store.expire_unconfirmed(self._timeout_ms):
            expired += found
        return expired

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                expired = await self.sweep()
            except Exception as exc:  # a failed round must not end the sweeping
                log.warning("receipt timeout sweep failed: %r", exc)
            else:
                if expired:
                    log.warning("%d messages got no receipt in time: EXPIRED", expired)
