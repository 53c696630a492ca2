"""Applying provider receipts, including ones that arrive before we know the provider id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, delete, select

from server.domain.models import Delivery, Receipt
from server.domain.provider import Accepted, AttemptRecord
from server.domain.status import DeliveryStatus
from server.storage import attempts as attempt_log
from server.storage import direct, fallback
from server.storage import messages as msgs
from server.storage.message_schema import attempts, messages, pending_receipts
from server.storage.tx import Tx


@dataclass(frozen=True, slots=True)
class Applied:
    """What became of a receipt, and whose message it was."""

    moved: bool
    # Empty while the receipt waits, parked, for its message to be known.
    message_id: str = ""
    tenant_id: str = ""
    trace_context: str = ""


PARKED = Applied(False)


async def _owners(tx: Tx, message_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """message id -> (tenant, traceparent), for the receipt's span and log line."""
    rows = await _OWNERS.rows(tx.conn, {"ids": list(set(message_ids))})
    return {r.id: (r.tenant_id, r.traceparent or "") for r in rows}


_OWNERS = direct.Statement(
    select(messages.c.id, messages.c.tenant_id, messages.c.traceparent).where(
        messages.c.id.in_(bindparam("ids", expanding=True))
    )
)


async def _apply_known(tx: Tx, items: Sequence[tuple[str, str, DeliveryStatus, str]]) -> list[bool]:
    """(message id, channel, status, reason) of receipts whose message is known, in order.

    A receipt for a fallback leg settles that leg; one that came after the
    next leg fired is kept in the history, flagged, even when it moves nothing.
    """
    flags = await fallback.note_receipts(tx, [(m, c, status) for m, c, status, _ in items])
    moved: list[bool] = []
    for (message_id, _, status, reason), flag in zip(items, flags, strict=True):
        advanced = await msgs.set_status(
            tx, message_id, status, reason=flag or reason, dispatch_state=None
        )
        if flag and not advanced:
            await msgs.insert_history_later(tx, message_id, status, flag)
        moved.append(advanced)
    return moved


async def apply(tx: Tx, channel_id: str, receipt: Receipt) -> Applied:
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
        return PARKED
    (moved,) = await _apply_known(tx, [(message_id, channel_id, receipt.status, receipt.reason)])
    tenant, traceparent = (await _owners(tx, [message_id])).get(message_id, ("", ""))
    return Applied(moved, message_id, tenant, traceparent)


async def submitted(tx: Tx, delivery: Delivery, accepted: Accepted, provider: str) -> None:
    """Record the provider's acceptance, then any receipts that were waiting for it."""
    carrier = accepted.channel_id or delivery.channel_id
    await attempt_log.record(tx, delivery.message_id, _attempts(delivery, accepted, provider))
    await msgs.set_status(
        tx,
        delivery.message_id,
        DeliveryStatus.SUBMITTED,
        provider_message_id=accepted.provider_message_id,
        segments=accepted.segments,
    )
    # A fallback leg's deadline runs from when its provider took it.
    await fallback.arm(tx, [(delivery.message_id, carrier, accepted.provider_message_id)])
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
    await _apply_known(
        tx,
        [
            (delivery.message_id, row.channel_id, DeliveryStatus(row.status), row.reason)
            for row in waiting
        ],
    )
    if waiting:
        await tx.conn.execute(
            delete(pending_receipts).where(pending_receipts.c.id.in_([r.id for r in waiting]))
        )


async def apply_many(tx: Tx, receipts: Sequence[tuple[str, Receipt]]) -> list[Applied]:
    """apply() for many (channel, receipt) pairs with a few statements in all."""
    found = await attempt_log.messages_for(
        tx, [(channel_id, r.provider_message_id) for channel_id, r in receipts]
    )
    missing = [
        (c, r.provider_message_id) for c, r in receipts if (c, r.provider_message_id) not in found
    ]
    if missing:
        found.update(await msgs.find_many_by_provider_id(tx, missing))
    parked = [
        {
            "channel_id": channel_id,
            "provider_message_id": r.provider_message_id,
            "status": r.status.value,
            "reason": r.reason,
            "received_at": tx.now,
        }
        for channel_id, r in receipts
        if (channel_id, r.provider_message_id) not in found
    ]
    if parked:
        await tx.conn.execute(pending_receipts.insert(), parked)
    known = [
        (found[(c, r.provider_message_id)], c, r)
        for c, r in receipts
        if (c, r.provider_message_id) in found
    ]
    flags = await fallback.note_receipts(tx, [(m, c, r.status) for m, c, r in known])
    moves = await msgs.set_status_many(
        tx,
        [
            msgs.StatusChange(message_id, r.status, flag or r.reason, dispatch_state=None)
            for (message_id, _, r), flag in zip(known, flags, strict=True)
        ],
    )
    for (late_id, _, r), flag, advanced in zip(known, flags, moves, strict=True):
        if flag and not advanced:
            await msgs.insert_history_later(tx, late_id, r.status, flag)
    moved = iter(moves)
    owners = await _owners(tx, [m for m, _, _ in known]) if known else {}
    applied: list[Applied] = []
    for c, r in receipts:
        message_id = found.get((c, r.provider_message_id))
        if message_id is None:
            applied.append(PARKED)
            continue
        tenant, traceparent = owners.get(message_id, ("", ""))
        applied.append(Applied(next(moved), message_id, tenant, traceparent))
    return applied


async def apply_one(tx: Tx, receipt: tuple[str, Receipt]) -> Applied:
    return await apply(tx, *receipt)


Submission = tuple[Delivery, Accepted, str]


# Built once: it runs for every group of provider acceptances.
_PARKED_FOR = direct.Statement(
    select(pending_receipts)
    .where(
        pending_receipts.c.channel_id.in_(bindparam("channels", expanding=True)),
        pending_receipts.c.provider_message_id.in_(bindparam("ids", expanding=True)),
    )
    .order_by(pending_receipts.c.id)
)


async def submitted_many(tx: Tx, items: Sequence[Submission]) -> list[None]:
    """submitted() for many deliveries with a few statements in all."""
    await attempt_log.record_many(
        tx,
        [
            (delivery.message_id, _attempts(delivery, accepted, provider))
            for delivery, accepted, provider in items
        ],
    )
    await msgs.set_status_many(
        tx,
        [
            msgs.StatusChange(
                delivery.message_id,
                DeliveryStatus.SUBMITTED,
                provider_message_id=accepted.provider_message_id,
                segments=accepted.segments,
            )
            for delivery, accepted, _provider in items
        ],
    )
    carriers = {
        (accepted.channel_id or delivery.channel_id, accepted.provider_message_id): delivery
        for delivery, accepted, _ in items
    }
    # A fallback leg's deadline runs from when its provider took it.
    await fallback.arm(tx, [(d.message_id, c, p) for (c, p), d in carriers.items()])
    waiting = await _PARKED_FOR.rows(
        tx.conn, {"channels": list({c for c, _ in carriers}), "ids": list({p for _, p in carriers})}
    )
    waiting = [row for row in waiting if (row.channel_id, row.provider_message_id) in carriers]
    await _apply_known(
        tx,
        [
            (
                carriers[(row.channel_id, row.provider_message_id)].message_id,
                row.channel_id,
                DeliveryStatus(row.status),
                row.reason,
            )
            for row in waiting
        ],
    )
    if waiting:
        await tx.conn.execute(
            delete(pending_receipts).where(pending_receipts.c.id.in_([r.id for r in waiting]))
        )
    return [None] * len(items)


async def submitted_one(tx: Tx, item: Submission) -> None:
    await submitted(tx, *item)


def _attempts(delivery: Delivery, accepted: Accepted, provider: str) -> list[AttemptRecord]:
    return [
        *accepted.earlier,
        AttemptRecord(
            accepted.channel_id or delivery.channel_id,
            accepted.provider or provider,
            "ACCEPTED",
            accepted.provider_message_id,
            segments=accepted.segments,
            latency_ms=accepted.latency_ms,
        ),
    ]


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
                pending_receipts.c.channel_id,
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
    await _apply_known(
        tx, [(row.mid, row.channel_id, DeliveryStatus(row.status), row.reason) for row in rows]
    )
    if rows:
        await tx.conn.execute(
            delete(pending_receipts).where(pending_receipts.c.id.in_([r.id for r in rows]))
        )
    await tx.conn.execute(
        delete(pending_receipts).where(pending_receipts.c.received_at < tx.now - max_age_ms)
    )
    return len(rows)
