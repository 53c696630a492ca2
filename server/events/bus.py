"""In-process fan-out of committed events to live subscribers.

Each subscriber has a bounded buffer. A subscriber that falls further behind
than its bound is marked overflowed and must resume from the event log; the
publisher never blocks and memory never grows without bound.

A bus may also tell a subscriber it is behind (``resync``): events were
committed that it may not have been offered. The subscriber then reads the
event log after its cursor before taking anything else; the log is the source
of truth, the bus only carries live fan-out.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from server.domain.events import StoredEvent

EventFilter = Callable[[StoredEvent], bool]


class EventBus(Protocol):
    """Fans committed events out to live subscribers."""

    def subscribe(
        self, tenant_id: str, accept: EventFilter, limit: int = 10_000
    ) -> Subscription: ...

    def publish(self, events: Sequence[StoredEvent]) -> None: ...

    def shutdown(self) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class _Owner(Protocol):
    def unsubscribe(self, sub: Subscription) -> None: ...


class Subscription:
    def __init__(self, bus: _Owner, tenant_id: str, accept: EventFilter, limit: int) -> None:
        self._bus = bus
        self.tenant_id = tenant_id
        self._accept = accept
        self._limit = limit
        self._buffer: deque[StoredEvent] = deque()
        self._wakeup = asyncio.Event()
        self.overflowed = False
        self.terminated = False
        self.closed = False
        # Set by the bus when events may have been committed without being
        # offered here; cleared by the reader once it has read the log.
        self.behind = False
        # Set when the stream must end: overflow or shutdown. A writer blocked
        # on a slow client waits on this alongside its write.
        self.stopped = asyncio.Event()

    def offer(self, event: StoredEvent) -> None:
        if self.overflowed or not self._accept(event):
            return
        if len(self._buffer) >= self._limit:
            self.overflowed = True
            self._buffer.clear()
            self.stopped.set()
        else:
            self._buffer.append(event)
        self._wakeup.set()

    def resync(self) -> None:
        """Tell the reader to catch up from the event log before going on."""
        if not self.overflowed and not self.closed:
            self.behind = True
            self._wakeup.set()

    def take_behind(self) -> bool:
        behind, self.behind = self.behind, False
        return behind

    async def next_batch(self, max_wait: float) -> list[StoredEvent]:
        """Everything buffered, waiting up to max_wait seconds for something to arrive."""
        if not self._buffer and not self.overflowed and not self.terminated and not self.behind:
            self._wakeup.clear()
            try:
                async with asyncio.timeout(max_wait):
                    await self._wakeup.wait()
            except TimeoutError:
                return []
        batch = list(self._buffer)
        self._buffer.clear()
        return batch

    def terminate(self) -> None:
        self.terminated = True
        self._wakeup.set()
        self.stopped.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus.unsubscribe(self)


class InProcessBus:
    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def subscribe(self, tenant_id: str, accept: EventFilter, limit: int = 10_000) -> Subscription:
        sub = Subscription(self, tenant_id, accept, limit)
        self._subs.setdefault(tenant_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.tenant_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.tenant_id]

    def publish(self, events: Sequence[StoredEvent]) -> None:
        for event in events:
            for sub in self._subs.get(event.tenant_id, ()):
                sub.offer(event)

    def resync_all(self) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.resync()

    async def start(self) -> None:
        """Nothing to connect to: subscribers live in this process."""

    async def close(self) -> None:
        """Nothing to disconnect."""

    def shutdown(self) -> None:
        """Wake every subscriber so its stream can end before the server stops."""
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.terminate()
