"""Readiness: whether this process can do its work now, as opposed to whether it lives.

Liveness (/healthz, the gRPC health service's "" entry) says the process is
up; restarting it would not help while the database is away. Readiness
(/readyz, the health service's cim.v1 entries) says whether to send traffic
here: a cheap query against the store, every fraction of a second, turns it
off within a probe or two of the store going away and on again when it is back.
The gRPC health service and the façade's /readyz (server/gateway/health.py)
both report it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from server.aio import IDLE, WorkerLoop

log = logging.getLogger(__name__)
PROBE_INTERVAL_S = 0.5
PROBE_TIMEOUT_S = 1.0


class Readiness:
    def __init__(
        self,
        probe: Callable[[], Awaitable[None]],
        on_change: Callable[[bool], Awaitable[None]],
        *,
        interval: float = PROBE_INTERVAL_S,
        timeout: float = PROBE_TIMEOUT_S,
    ) -> None:
        self._probe = probe
        self._on_change = on_change
        self._timeout = timeout
        # Reporting a change that failed is reported again at the next probe,
        # not later: readiness must follow the store closely.
        self._loop = WorkerLoop(
            "readiness",
            self._round,
            interval=interval,
            max_backoff=interval,
            what="readiness probe",
            logger=log,
        )
        self.ready = True
        self.reason = ""

    def start(self) -> None:
        self._loop.start()

    async def close(self) -> None:
        await self._loop.close()

    async def check(self) -> bool:
        """Probe once and report a change; returns whether the store answered."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._probe()
        except Exception as exc:  # TimeoutError included: a store that hangs is not ready
            ready, reason = False, f"store unreachable: {exc!r}"
        else:
            ready, reason = True, ""
        if ready != self.ready:
            if ready:
                log.warning("store reachable again: ready for traffic")
            else:
                log.warning("not ready for traffic: %s", reason)
            self.ready, self.reason = ready, reason
            await self._on_change(ready)
        return ready

    async def _round(self) -> float | None:
        await self.check()
        return IDLE
