"""SqlStore's part for deadline fallback legs (mixed into SqlStore)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from server.storage import fallback
from server.storage.fallback import Fired
from server.storage.writer import Writer


class FallbackStoreMixin:
    engine: AsyncEngine
    _writer: Writer

    async def fire_due_fallbacks(self, limit: int = 100) -> list[Fired]:
        """Fire the next leg wherever a leg's deadline passed without its success status."""
        return await self._writer.submit(lambda tx: fallback.fire_due(tx, limit))

    async def next_fallback_due(self) -> int | None:
        """When the earliest armed fallback deadline passes (ms), or None."""
        async with self.engine.connect() as conn:
            return await fallback.next_due(conn)

    async def withdraw_fallback(self, message_id: str) -> int:
        """Cancel the legs of a message that have not fired yet; returns how many."""
        return await self._writer.submit(lambda tx: fallback.withdraw(tx, message_id))
