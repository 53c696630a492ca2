"""What the housekeeper deletes: expired idempotency keys, old webhooks, old events."""

from __future__ import annotations

from server.storage import accept
from server.storage import events as event_log
from server.storage import webhooks as hooks
from server.storage.tx import Tx
from server.storage.writer import Writer


class RetentionRows:
    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    async def prune(self) -> None:
        """Drop what has outlived its purpose: expired idempotency keys, old delivered webhooks."""

        async def work(tx: Tx) -> None:
            await accept.prune(tx)
            await hooks.prune(tx)

        await self._writer.submit(work)

    async def prune_events(self, retention_ms: int) -> int:
        return await self._writer.submit(lambda tx: event_log.prune(tx, retention_ms))
