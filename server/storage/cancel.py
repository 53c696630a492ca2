"""Cancelling messages that have not left, against a dispatcher that may be about to send them.

The decision is one conditional UPDATE. The dispatcher's start (messages._START)
is the other: it marks a claim as sent only while the row is still CLAIMED and
unstarted. Whichever commits first wins the row, on both engines (SQLite has
one writer; on PostgreSQL the later UPDATE waits for the row's lock and
rechecks its WHERE against the row the first one committed), so a cancelled
message never reaches a provider and a started one is never called cancelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, or_, select, update

from server.domain.cancellation import CancelOutcome, CancelResult, not_cancelled
from server.domain.fallback import LegState
from server.domain.status import DeliveryStatus
from server.storage import events as event_log
from server.storage import webhooks
from server.storage.message_schema import fallback_legs, messages
from server.storage.messages import CLAIMED, DONE, PENDING, insert_history_later, status_event
from server.storage.tx import LATER_MESSAGES, StatusMove, Tx

# Dispatch states of a message no provider has seen and that waits for nothing
# but its turn: due, scheduled for later, or waiting for a retry.
CANCELLABLE_STATES: tuple[str, ...] = (PENDING,)


def _cancellable() -> Any:
    return or_(
        messages.c.dispatch_state.in_(CANCELLABLE_STATES),
        # Claimed by a dispatcher that has not recorded its start: it will be
        # refused its start and send nothing.
        and_(messages.c.dispatch_state == CLAIMED, messages.c.attempt_started_at.is_(None)),
    )


async def cancel(
    tx: Tx,
    tenant_id: str,
    reason: str,
    *,
    message_ids: Sequence[str] = (),
    batch_id: str = "",
) -> list[CancelResult]:
    """Cancel what can be of the named messages (or of one batch); one result per message found.

    Messages of other tenants are not found. Results come in message id order.
    """
    await tx.flush(upto=LATER_MESSAGES)  # messages accepted earlier in this group
    scope = [messages.c.tenant_id == tenant_id]
    if batch_id:
        scope.append(messages.c.batch_id == batch_id)
    else:
        scope.append(messages.c.id.in_(list(message_ids)))
    taken = (
        await tx.conn.execute(
            update(messages)
            .where(*scope, _cancellable())
            .values(
                status=DeliveryStatus.CANCELLED.value,
                dispatch_state=DONE,
                lease_until=None,
                last_error=reason,
                updated_at=tx.now,
            )
            .returning(*messages.c)
        )
    ).all()
    results = {
        row.id: CancelResult(row.id, CancelOutcome.CANCELLED, DeliveryStatus.CANCELLED)
        for row in taken
    }
    for row in taken:
        status = DeliveryStatus.CANCELLED
        await insert_history_later(tx, row.id, status, reason)
        await event_log.append_later(tx, tenant_id, status_event(row, status, reason))
        tx.moves.append(StatusMove(row.channel_id, status.value, row.created_at, tx.now))
        await webhooks.enqueue_receipt(tx, row, status.value, reason)
    # Fallback legs that have not fired never will, whether the message was
    # taken above or one of its legs already left. A leg fires only from
    # WAITING by a conditional UPDATE too, so a deadline and a cancel never
    # both win one.
    withdrawn = (
        await tx.conn.execute(
            update(fallback_legs)
            .where(
                fallback_legs.c.state == LegState.WAITING.value,
                fallback_legs.c.message_id.in_(select(messages.c.id).where(*scope)),
            )
            .values(state=LegState.CANCELLED.value, settled_at=tx.now)
            .returning(fallback_legs.c.message_id)
        )
    ).scalars()
    legs_withdrawn = set(withdrawn)
    found = await tx.conn.execute(select(messages.c.id, messages.c.status).where(*scope))
    for row in found:
        if row.id in results:
            continue
        status = DeliveryStatus(row.status)
        if row.id in legs_withdrawn:
            results[row.id] = CancelResult(row.id, CancelOutcome.FALLBACK_CANCELLED, status)
            await insert_history_later(
                tx, row.id, status, f"fallback legs not yet fired withdrawn: {reason}"
            )
        else:
            results[row.id] = not_cancelled(row.id, status)
    return [results[key] for key in sorted(results)]
