"""SqlStore's part for withdrawing queued messages and reading the queue (mixed into SqlStore)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain.cancellation import CancelResult
from server.domain.quota import QueueAhead
from server.storage import cancel, stats
from server.storage.writer import Writer


class OutboxStoreMixin:
    engine: AsyncEngine
    _writer: Writer

    async def cancel_messages(
        self, tenant_id: str, message_ids: Sequence[str], reason: str
    ) -> list[CancelResult]:
        """Cancel those of the messages no provider has seen; one result per message found."""
        return await self._writer.submit(
            lambda tx: cancel.cancel(tx, tenant_id, reason, message_ids=message_ids)
        )

    async def cancel_batch(self, tenant_id: str, batch_id: str, reason: str) -> list[CancelResult]:
        """cancel_messages for every message of one batch."""
        return await self._writer.submit(
            lambda tx: cancel.cancel(tx, tenant_id, reason, batch_id=batch_id)
        )

    async def queue_ahead(self, channel_ids: Sequence[str], priority: int) -> QueueAhead:
        """What a new send at `priority` would wait behind, per channel: one read."""
        async with self.engine.connect() as conn:
            return await stats.queue_ahead(conn, self._writer.now(), channel_ids, priority)
