"""The event log as its readers see it: by cursor, per tenant."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain.events import NewEvent, StoredEvent
from server.storage import events as event_log
from server.storage.tx import Tx
from server.storage.writer import Writer


class EventRows:
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self._engine = engine
        self._writer = writer

    async def events_after(self, tenant_id: str, cursor: int, limit: int) -> list[StoredEvent]:
        async with self._engine.connect() as conn:
            return await event_log.read_after(conn, tenant_id, cursor, limit)

    async def append_events(self, tenant_id: str, new: Sequence[NewEvent]) -> list[StoredEvent]:
        async def work(tx: Tx) -> list[StoredEvent]:
            return [await event_log.append(tx, tenant_id, e) for e in new]

        return await self._writer.submit(work)

    async def retention_floor(self, tenant_id: str) -> int:
        async with self._engine.connect() as conn:
            return await event_log.retention_floor(conn, tenant_id)

    async def newest_cursor(self, tenant_id: str) -> int:
        async with self._engine.connect() as conn:
            return await event_log.newest_cursor(conn, tenant_id)
