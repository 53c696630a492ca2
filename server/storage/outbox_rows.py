"""The dispatcher's side of outbound messages: claims, outcomes, receipts, fallback legs."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain.models import Delivery, Receipt
from server.domain.provider import Accepted, AttemptRecord
from server.domain.status import DeliveryStatus
from server.storage import attempts as attempt_log
from server.storage import claims, fallback, receipt_timeouts, receipts, stats
from server.storage import messages as msgs
from server.storage.coalesce import Coalesced
from server.storage.fallback import Fired
from server.storage.stats import OutboxStats
from server.storage.tx import Tx
from server.storage.writer import Writer


class OutboxRows:
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self._engine = engine
        self._writer = writer
        # Dispatch outcomes arrive one by one; those waiting together are written together.
        self._submitted = Coalesced(writer, receipts.submitted_many, receipts.submitted_one)
        self._receipts = Coalesced(writer, receipts.apply_many, receipts.apply_one)
        # Sends starting together record their starts in one commit, not one each.
        self._starts = Coalesced(writer, claims.start_many, claims.start_one, events=False)
        self._claimed_before = False

    async def claim_due(
        self, limit: int, lease_ms: int, channels: Sequence[str] | None = None
    ) -> list[Delivery]:
        """Claim due work under a lease.

        The first claim after the store opens first gives back every claim
        that never reached a provider: those a killed process left need not
        wait out their lease, as the provider never saw them.
        """
        if self._claimed_before:
            return await self._writer.submit(
                lambda tx: claims.claim_due(tx, limit, lease_ms, channels), events=False
            )

        async def recover_then_claim(tx: Tx) -> list[Delivery]:
            await claims.release_unstarted(tx)
            return await claims.claim_due(tx, limit, lease_ms, channels)

        claimed = await self._writer.submit(recover_then_claim, events=False)
        self._claimed_before = True
        return claimed

    async def start_attempt(self, delivery: Delivery, provider: str) -> bool:
        """Durably record that a claim's request is about to go to the provider.

        False means the claim was taken over meanwhile, and the caller must not send.
        """
        return await self._starts((delivery, provider))

    async def release_many(self, message_ids: Sequence[str]) -> None:
        """release() for a whole surplus of a claim, in one write."""
        await self._writer.submit(lambda tx: claims.release_many(tx, message_ids), events=False)

    async def mark_submitted(self, delivery: Delivery, accepted: Accepted, provider: str) -> None:
        await self._submitted((delivery, accepted, provider))

    async def reschedule(
        self, message_id: str, due_at: int, reason: str, failed: AttemptRecord | None = None
    ) -> None:
        async def work(tx: Tx) -> None:
            if failed is not None:
                await attempt_log.record(tx, message_id, [failed])
            await msgs.set_status(
                tx,
                message_id,
                DeliveryStatus.ACCEPTED,
                reason=reason,
                dispatch_state=msgs.PENDING,
                due_at=due_at,
            )

        await self._writer.submit(work)

    async def finish(
        self,
        message_id: str,
        status: DeliveryStatus,
        reason: str,
        failed: AttemptRecord | None = None,
    ) -> None:
        async def work(tx: Tx) -> None:
            if failed is not None:
                await attempt_log.record(tx, message_id, [failed])
            # A refused fallback leg is not the message's end: the next leg is queued.
            if status is DeliveryStatus.FAILED and await fallback.refused(tx, message_id, reason):
                return
            await msgs.set_status(tx, message_id, status, reason=reason)

        await self._writer.submit(work)

    async def apply_receipt(self, channel_id: str, receipt: Receipt) -> receipts.Applied:
        return await self._receipts((channel_id, receipt))

    async def reconcile_receipts(self) -> int:
        return await self._writer.submit(lambda tx: receipts.reconcile(tx))

    async def take_unconfirmed(
        self, rules: receipt_timeouts.ReceiptRules, askable: Collection[str], limit: int
    ) -> receipt_timeouts.Taken:
        return await self._writer.submit(
            lambda tx: receipt_timeouts.take(tx, rules, askable, limit)
        )

    async def still_on_its_way(
        self, message_id: str, said: str, rules: receipt_timeouts.ReceiptRules
    ) -> bool:
        return await self._writer.submit(
            lambda tx: receipt_timeouts.still_on_its_way(tx, message_id, said, rules)
        )

    async def fire_due_fallbacks(self, limit: int = 100) -> list[Fired]:
        """Fire the next leg wherever a leg's deadline passed without its success status."""
        return await self._writer.submit(lambda tx: fallback.fire_due(tx, limit))

    async def next_fallback_due(self) -> int | None:
        """When the earliest armed fallback deadline passes (ms), or None."""
        async with self._engine.connect() as conn:
            return await fallback.next_due(conn)

    async def withdraw_fallback(self, message_id: str) -> int:
        """Cancel the legs of a message that have not fired yet; returns how many."""
        return await self._writer.submit(lambda tx: fallback.withdraw(tx, message_id))

    async def outbox_stats(self) -> OutboxStats:
        """The outbox's backlog per channel and the webhook dead letters, for /metrics."""
        async with self._engine.connect() as conn:
            return await stats.outbox(conn, self._writer.now())
