"""The API's side of outbound messages: accept, read back, cancel, count the queue."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain import timeline
from server.domain.cancellation import CancelResult
from server.domain.models import OutboundDraft, OutboundMessage, Page
from server.domain.paging import PageRequest
from server.domain.quota import QueueAhead
from server.domain.status import DeliveryStatus
from server.storage import accept, cancel, consents, dead_letters, fallback, stats
from server.storage import messages as msgs
from server.storage.accept import AcceptResult, IdempotencyKey
from server.storage.tx import Tx
from server.storage.writer import Writer


class MessageRows:
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self._engine = engine
        self._writer = writer

    async def accept(
        self,
        tenant_id: str,
        drafts: Sequence[OutboundDraft],
        idem: IdempotencyKey | None,
        render: Callable[[Sequence[OutboundMessage]], bytes],
        traceparent: str = "",
    ) -> AcceptResult:
        """Store the drafts; `traceparent` is the trace their later work continues."""

        async def work(tx: Tx) -> AcceptResult:
            screened = await consents.screen(tx, tenant_id, drafts)
            result = await accept.accept(tx, tenant_id, screened, idem, render, traceparent)
            if result.replay is None and any(d.fallback for d in screened):
                await fallback.plan(tx, result.messages, screened)
            return result

        hint = consents.screen_hint(tenant_id, drafts)
        return await self._writer.submit(work, send=True, hint=hint)

    async def get_message(self, tenant_id: str, message_id: str) -> OutboundMessage:
        async with self._engine.connect() as conn:
            return await msgs.get(conn, tenant_id, message_id)

    async def list_messages(
        self,
        tenant_id: str,
        *,
        page: PageRequest,
        status: DeliveryStatus | None = None,
        channel_id: str = "",
        correlation_id: str = "",
    ) -> Page[OutboundMessage]:
        async with self._engine.connect() as conn:
            return await msgs.list_page(
                conn,
                tenant_id,
                page=page,
                status=status,
                channel_id=channel_id,
                correlation_id=correlation_id,
            )

    async def message_timeline(
        self, tenant_id: str, message_id: str
    ) -> tuple[OutboundMessage, list[timeline.TimelineStep]]:
        async with self._engine.connect() as conn:
            message = await msgs.get(conn, tenant_id, message_id)
            posts = await dead_letters.attempts_for_message(conn, tenant_id, message_id)
        return message, timeline.build(message, posts)

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
        async with self._engine.connect() as conn:
            return await stats.queue_ahead(conn, self._writer.now(), channel_ids, priority)
