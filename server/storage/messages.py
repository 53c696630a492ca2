"""Outbound messages: reading them, and moving their status forward.

Accepting them is in accept.py, leasing them to a dispatcher in claims.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import not_found
from server.domain.events import EventType, NewEvent
from server.domain.models import (
    OutboundMessage,
    Page,
    StatusEntry,
)
from server.domain.paging import PageRequest
from server.domain.status import DeliveryStatus, advances
from server.storage import attempts as attempt_log
from server.storage import direct, fallback, webhooks
from server.storage import events as event_log
from server.storage.keyset import Order, keyset_page
from server.storage.message_schema import messages, status_history
from server.storage.tx import LATER_HISTORY, LATER_MESSAGES, StatusMove, Tx
from server.telemetry.tracing import trace_id_in

# A message's dispatch_state: waiting its turn, leased to a dispatcher, or settled.
PENDING, CLAIMED, DONE = "PENDING", "CLAIMED", "DONE"


_insert_history = direct.Insert(status_history, ("message_id", "status", "reason", "ts"))


async def insert_history_later(
    tx: Tx, message_id: str, status: DeliveryStatus, reason: str
) -> None:
    """A status history row, joining the group's multi-row insert."""
    await tx.later(LATER_HISTORY, _insert_history, _history_row(message_id, status, reason, tx.now))


async def insert_histories_later(
    tx: Tx, entries: Sequence[tuple[str, DeliveryStatus, str]]
) -> None:
    """insert_history_later for many (message id, status, reason) at once."""
    rows = [
        _history_row(message_id, status, reason, tx.now) for message_id, status, reason in entries
    ]
    await tx.later_all(LATER_HISTORY, _insert_history, rows)


def _history_row(message_id: str, status: DeliveryStatus, reason: str, ts: int) -> dict[str, Any]:
    return {"message_id": message_id, "status": status.value, "reason": reason, "ts": ts}


def status_event(m: Any, status: DeliveryStatus, reason: str) -> NewEvent:
    return NewEvent(
        conversation_id=m.conversation_id,
        type=EventType.DELIVERY_STATUS,
        message=status.value,
        content_type="text/plain",
        message_id=m.id,
        status=status.value,
        reason=reason,
        channel_id=m.channel_id,
        customer_id=m.destination,
    )


async def get(conn: AsyncConnection, tenant_id: str, message_id: str) -> OutboundMessage:
    row = (
        await conn.execute(
            select(messages).where(messages.c.tenant_id == tenant_id, messages.c.id == message_id)
        )
    ).first()
    if row is None:
        raise not_found("message", message_id)
    history = (
        await conn.execute(
            select(status_history)
            .where(status_history.c.message_id == message_id)
            .order_by(status_history.c.id)
        )
    ).all()
    found = _from_row(
        row, tuple(StatusEntry(DeliveryStatus(h.status), h.ts, h.reason) for h in history)
    )
    return replace(
        found,
        attempt_log=await attempt_log.log_of(conn, message_id),
        fallback=await fallback.legs_of(conn, message_id),
    )


async def list_page(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    page: PageRequest,
    status: DeliveryStatus | None = None,
    channel_id: str = "",
    correlation_id: str = "",
) -> Page[OutboundMessage]:
    query = select(messages).where(messages.c.tenant_id == tenant_id)
    if status is not None:
        query = query.where(messages.c.status == status.value)
    if channel_id:
        query = query.where(messages.c.channel_id == channel_id)
    if correlation_id:
        query = query.where(messages.c.correlation_id == correlation_id)
    return await keyset_page(conn, query, NEWEST_FIRST, page, from_row)


# The list's order, newest first; (created_at, id) is also its page position.
NEWEST_FIRST = Order((messages.c.created_at, messages.c.id), descending=True)


def from_row(row: Any) -> OutboundMessage:
    """A messages row without its history, for listings in other modules."""
    return _from_row(row, ())


def _from_row(row: Any, history: tuple[StatusEntry, ...]) -> OutboundMessage:
    return OutboundMessage(
        id=row.id,
        tenant_id=row.tenant_id,
        channel_id=row.channel_id,
        destination=row.destination,
        type=row.type,
        text=row.text,
        content=row.content,
        conversation_id=row.conversation_id,
        correlation_id=row.correlation_id,
        status=DeliveryStatus(row.status),
        priority=row.priority,
        due_at=row.due_at,
        expire_at=row.expire_at,
        attempts=row.attempts,
        created_at=row.created_at,
        provider_message_id=row.provider_message_id or "",
        last_error=row.last_error,
        mask=bool(row.mask),
        history=history,
        segments=row.segments,
        request_id=row.request_id or "",
        trace_id=trace_id_in(row.traceparent or ""),
        batch_id=row.batch_id or "",
    )


# Built once, as the dispatch statements are (claims.py): set_status_many
# runs for every group of provider outcomes and receipts.
# Every status change runs these: compiled once (see direct.py).
_LOCK_MANY = direct.Statement(
    select(messages)
    .where(messages.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(messages.c.id)
    .with_for_update()
)
_LOCK_ONE = direct.Statement(
    select(messages).where(messages.c.id == bindparam("id")).with_for_update()
)
_STATUS_UPDATES: dict[tuple[str, ...], direct.Statement] = {}


def _status_update(columns: tuple[str, ...]) -> direct.Statement:
    """The UPDATE of a message's columns, one per set of columns set_status writes."""
    found = _STATUS_UPDATES.get(columns)
    if found is None:
        found = _STATUS_UPDATES[columns] = direct.Statement(
            update(messages)
            .where(messages.c.id == bindparam("_id"))
            .values({name: bindparam(name) for name in columns})
        )
    return found


_STATUS_COLUMNS = (
    "updated_at",
    "dispatch_state",
    "lease_until",
    "provider_message_id",
    "segments",
    "last_error",
    "status",
)
_SET_STATUS_MANY = direct.Statement(
    update(messages)
    .where(messages.c.id == bindparam("_id"))
    .values({name: bindparam(name) for name in _STATUS_COLUMNS})
)


async def set_status(
    tx: Tx,
    message_id: str,
    status: DeliveryStatus,
    *,
    reason: str = "",
    provider_message_id: str | None = None,
    dispatch_state: str | None = DONE,
    due_at: int | None = None,
    segments: int | None = None,
) -> bool:
    """Record a status if it moves the message forward; returns whether it did."""
    await tx.flush(upto=LATER_MESSAGES)  # it may have been accepted earlier in this group
    # Lock the row: a receipt and the dispatcher may change it at the same time.
    found = await _LOCK_ONE.rows(tx.conn, {"id": message_id})
    if not found:
        return False
    row = found[0]
    values: dict[str, Any] = {"updated_at": tx.now}
    if dispatch_state is not None:
        values["dispatch_state"] = dispatch_state
        values["lease_until"] = None
    if provider_message_id is not None:
        values["provider_message_id"] = provider_message_id
    if segments is not None:
        values["segments"] = segments
    if due_at is not None:
        values["due_at"] = due_at
    if reason:
        values["last_error"] = reason
    moved = advances(DeliveryStatus(row.status), status)
    if moved:
        values["status"] = status.value
    await _status_update(tuple(values)).run(tx.conn, [{**values, "_id": message_id}])
    if moved:
        await tx.later(
            LATER_HISTORY, _insert_history, _history_row(message_id, status, reason, tx.now)
        )
        await event_log.append_later(tx, row.tenant_id, status_event(row, status, reason))
        tx.moves.append(StatusMove(row.channel_id, status.value, row.created_at, tx.now))
        # The receipt is queued in the same transaction as the change it reports.
        await webhooks.enqueue_receipt(tx, row, status.value, reason)
    return moved


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One set_status call, for set_status_many."""

    message_id: str
    status: DeliveryStatus
    reason: str = ""
    provider_message_id: str | None = None
    dispatch_state: str | None = DONE
    segments: int | None = None


async def set_status_many(tx: Tx, changes: Sequence[StatusChange]) -> list[bool]:
    """set_status for many messages with a few statements in all, not a few each."""
    ids = [c.message_id for c in changes]
    if len(set(ids)) != len(ids):
        # Two changes to one message: each must see the other's outcome.
        return [
            await set_status(
                tx,
                c.message_id,
                c.status,
                reason=c.reason,
                provider_message_id=c.provider_message_id,
                dispatch_state=c.dispatch_state,
                segments=c.segments,
            )
            for c in changes
        ]
    await tx.flush(upto=LATER_MESSAGES)
    # Locked in id order, so two claimers never wait on each other crosswise.
    found = await _LOCK_MANY.rows(tx.conn, {"ids": sorted(ids)})
    rows = {r.id: r for r in found}
    updates: list[dict[str, Any]] = []
    moved: list[bool] = []
    for c in changes:
        row = rows.get(c.message_id)
        if row is None:
            moved.append(False)
            continue
        advanced = advances(DeliveryStatus(row.status), c.status)
        moved.append(advanced)
        # Every column is written so one statement serves all rows; the ones a
        # change leaves alone keep the value just read under the row lock.
        updates.append(
            {
                "_id": c.message_id,
                "updated_at": tx.now,
                "dispatch_state": row.dispatch_state
                if c.dispatch_state is None
                else c.dispatch_state,
                "lease_until": row.lease_until if c.dispatch_state is None else None,
                "provider_message_id": row.provider_message_id
                if c.provider_message_id is None
                else c.provider_message_id,
                "segments": row.segments if c.segments is None else c.segments,
                "last_error": c.reason or row.last_error,
                "status": c.status.value if advanced else row.status,
            }
        )
    if updates:
        await _SET_STATUS_MANY.run(tx.conn, updates)
    for c, advanced in zip(changes, moved, strict=True):
        if not advanced:
            continue
        row = rows[c.message_id]
        await tx.later(
            LATER_HISTORY, _insert_history, _history_row(c.message_id, c.status, c.reason, tx.now)
        )
        await event_log.append_later(tx, row.tenant_id, status_event(row, c.status, c.reason))
        tx.moves.append(StatusMove(row.channel_id, c.status.value, row.created_at, tx.now))
        await webhooks.enqueue_receipt(tx, row, c.status.value, c.reason)
    return moved


async def find_many_by_provider_id(
    tx: Tx, wanted: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """find_by_provider_id's second look, for many (channel, provider id) pairs."""
    rows = await tx.conn.execute(
        select(messages.c.id, messages.c.channel_id, messages.c.provider_message_id).where(
            messages.c.channel_id.in_({c for c, _ in wanted}),
            messages.c.provider_message_id.in_({p for _, p in wanted}),
        )
    )
    pairs = set(wanted)
    return {
        (r.channel_id, r.provider_message_id): r.id
        for r in rows
        if (r.channel_id, r.provider_message_id) in pairs
    }


async def find_by_provider_id(tx: Tx, channel_id: str, provider_message_id: str) -> str | None:
    via_attempt = await attempt_log.message_for(tx, channel_id, provider_message_id)
    if via_attempt is not None:
        return via_attempt
    return (
        await tx.conn.execute(
            select(messages.c.id).where(
                messages.c.channel_id == channel_id,
                messages.c.provider_message_id == provider_message_id,
            )
        )
    ).scalar()
