"""Applying provider receipts, including ones that arrive before we know the provider id."""

from __future__ import annotations

from sqlalchemy import and_, delete, select

from server.domain.models import Delivery, Receipt
from server.domain.provider import Accepted, AttemptRecord
from server.domain.status import DeliveryStatus
from server.storage import attempts as attempt_log
from server.storage import messages as msgs
from server.storage.schema import attempts, pending_receipts
from server.storage.writer import Tx


async def apply(tx: Tx, channel_id: str, receipt: Receipt) -> bool:
    message_id = await msgs.find_by_provider_id(tx, channel_id, receipt.provider_message_id)
    if message_id is None:
        await tx.conn.execute(
            pending_receipts.insert().values(
                channel_id=channel_id,
                provider_message_id=receipt.provider_message_id,
                status=receipt.status.value,
                reason=receipt.reason,
                received_at=tx.now,
            )
        )
        return False
    return await msgs.set_status(
        tx, message_id, receipt.status, reason=receipt.reason, dispatch_state=None
    )


async def submitted(tx: Tx, delivery: Delivery, accepted: Accepted, provider: str) -> None:
    """Record the provider's acceptance, then any receipts that were waiting for it."""
    carrier = accepted.channel_id or delivery.channel_id
    await attempt_log.record(
        tx,
        delivery.message_id,
        [
            *accepted.earlier,
            AttemptRecord(
                carrier,
                accepted.provider or provider,
                "ACCEPTED",
                accepted.provider_message_id,
                segments=accepted.segments,
            ),
        ],
    )
    await msgs.set_status(
        tx,
        delivery.message_id,
        DeliveryStatus.SUBMITTED,
        provider_message_id=accepted.provider_message_id,
        segments=accepted.segments,
    )
    waiting = (
        await tx.conn.execute(
            select(pending_receipts)
            .where(
                pending_receipts.c.channel_id == carrier,
                pending_receipts.c.provider_message_id == accepted.provider_message_id,
            )
            .order_by(pending_receipts.c.id)
        )
    ).all()
    for row in waiting:
        await msgs.set_status(
            tx,
            delivery.message_id,
            DeliveryStatus(row.status),
            reason=row.reason,
            dispatch_state=None,
        )
    if waiting:
        await tx.conn.execute(
            delete(pending_receipts).where(pending_receipts.c.id.in_([r.id for r in waiting]))
        )


async def reconcile(tx: Tx, limit: int = 500, max_age_ms: int = 24 * 3600 * 1000) -> int:
    """Apply parked receipts whose message has since recorded its provider id.

    A receipt and the submission it belongs to may commit in parallel (several
    writers, or several replicas) with neither seeing the other; this sweep
    closes that gap without locks. Receipts for ids nobody knows expire.
    """
    rows = (
        await tx.conn.execute(
            select(
                pending_receipts.c.id,
                pending_receipts.c.status,
                pending_receipts.c.reason,
                attempts.c.message_id.label("mid"),
            )
            .join(
                attempts,
                and_(
                    attempts.c.channel_id == pending_receipts.c.channel_id,
                    attempts.c.provider_message_id == pending_receipts.c.provider_message_id,
                ),
            )
            .order_by(pending_receipts.c.id)
            .limit(limit)
        )
    ).all()
    for row in rows:
        await msgs.set_status(
            tx, row.mid, DeliveryStatus(row.status), reason=row.reason, dispatch_state=None
        )
    if rows:
        await tx.conn.execute(
            delete(pending_receipts).where(pending_receipts.c.id.in_([r.id for r in rows]))
        )
    await tx.conn.execute(
        delete(pending_receipts).where(pending_receipts.c.received_at < tx.now - max_age_ms)
    )
    return len(rows)
