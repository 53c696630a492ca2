"""SqlStore's part for message timelines and webhook dead letters (mixed into SqlStore)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain import timeline
from server.domain.models import OutboundMessage, Page
from server.domain.paging import PageRequest
from server.domain.webhook_delivery import DeadLetter, EndpointState, PostOutcome, Redriven
from server.storage import dead_letters, webhook_endpoints
from server.storage import messages as msgs
from server.storage.webhooks import WebhookJob
from server.storage.writer import Writer


class WebhookStoreMixin:
    engine: AsyncEngine
    _writer: Writer

    async def message_timeline(
        self, tenant_id: str, message_id: str
    ) -> tuple[OutboundMessage, list[timeline.TimelineStep]]:
        async with self.engine.connect() as conn:
            message = await msgs.get(conn, tenant_id, message_id)
            posts = await dead_letters.attempts_for_message(conn, tenant_id, message_id)
        return message, timeline.build(message, posts)

    async def settle_webhook(
        self, job: WebhookJob, outcome: PostOutcome, retry_at: int | None, disable_after_ms: int
    ) -> bool:
        return await self._writer.submit(
            lambda tx: dead_letters.settle(tx, job, outcome, retry_at, disable_after_ms)
        )

    async def list_dead_letters(
        self,
        tenant_id: str,
        *,
        page: PageRequest,
        start: int = 0,
        end: int = 0,
        url: str = "",
    ) -> Page[DeadLetter]:
        async with self.engine.connect() as conn:
            return await dead_letters.list_page(
                conn,
                tenant_id,
                page=page,
                start=start,
                end=end,
                url=url,
            )

    async def redrive_dead_letter(self, tenant_id: str, row_id: int) -> None:
        await self._writer.submit(lambda tx: dead_letters.redrive_one(tx, tenant_id, row_id))

    async def redrive_dead_letters(
        self, tenant_id: str, start: int, end: int, url: str
    ) -> Redriven:
        return await self._writer.submit(
            lambda tx: dead_letters.redrive_range(tx, tenant_id, start, end, url)
        )

    async def webhook_endpoint(self, tenant_id: str) -> EndpointState:
        async with self.engine.connect() as conn:
            return await webhook_endpoints.state(conn, tenant_id)

    async def enable_webhook_endpoint(self, tenant_id: str) -> EndpointState:
        return await self._writer.submit(lambda tx: webhook_endpoints.enable(tx, tenant_id))
