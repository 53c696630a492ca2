"""The webhook outbox, its dead letters, and each tenant's endpoint state."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain.models import Page
from server.domain.paging import PageRequest
from server.domain.webhook_delivery import DeadLetter, EndpointState, PostOutcome, Redriven
from server.storage import dead_letters, webhook_endpoints
from server.storage import webhooks as hooks
from server.storage.webhooks import WebhookJob
from server.storage.writer import Writer


class WebhookRows:
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self._engine = engine
        self._writer = writer

    async def webhook_secret(self, tenant_id: str) -> str:
        # Get-or-create writes, so it goes through the writer even as a "read".
        return await self._writer.submit(lambda tx: hooks.secret_for(tx, tenant_id))

    async def enqueue_webhook(
        self, tenant_id: str, ordering_key: str, url: str, payload: hooks.Payload
    ) -> int:
        return await self._writer.submit(
            lambda tx: hooks.enqueue(tx, tenant_id, ordering_key, url, payload)
        )

    async def claim_webhooks(self, limit: int, lease_ms: int) -> list[hooks.WebhookJob]:
        # The sender looks after every commit, and most commits enqueue no
        # webhook: finding that out takes a read, not a turn of the writer.
        async with self._engine.connect() as conn:
            if not await hooks.any_due(conn, self._writer.now()):
                return []
        return await self._writer.submit(
            lambda tx: hooks.claim_due(tx, limit, lease_ms), events=False
        )

    async def settle_webhook(
        self, job: WebhookJob, outcome: PostOutcome, retry_at: int | None, disable_after_ms: int
    ) -> bool:
        return await self._writer.submit(
            lambda tx: dead_letters.settle(tx, job, outcome, retry_at, disable_after_ms)
        )

    async def webhook_done(self, webhook_id: int) -> None:
        await self._writer.submit(lambda tx: hooks.mark_done(tx, webhook_id), events=False)

    async def webhook_retry(self, webhook_id: int, next_at: int, error: str) -> None:
        await self._writer.submit(
            lambda tx: hooks.mark_retry(tx, webhook_id, next_at, error), events=False
        )

    async def webhook_dead(self, webhook_id: int, error: str) -> None:
        await self._writer.submit(lambda tx: hooks.mark_dead(tx, webhook_id, error))

    async def dead_webhooks(self, tenant_id: str) -> list[hooks.DeadWebhook]:
        async with self._engine.connect() as conn:
            return await hooks.list_dead(conn, tenant_id)

    async def list_dead_letters(
        self,
        tenant_id: str,
        *,
        page: PageRequest,
        start: int = 0,
        end: int = 0,
        url: str = "",
    ) -> Page[DeadLetter]:
        async with self._engine.connect() as conn:
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
        async with self._engine.connect() as conn:
            return await webhook_endpoints.state(conn, tenant_id)

    async def enable_webhook_endpoint(self, tenant_id: str) -> EndpointState:
        return await self._writer.submit(lambda tx: webhook_endpoints.enable(tx, tenant_id))
