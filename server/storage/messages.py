"""Outbound messages: durable accept, dispatch claims, status changes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import and_, bindparam, delete, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import already_exists, not_found
from server.domain.events import EventType, NewEvent
from server.domain.models import (
    Delivery,
    OutboundDraft,
    OutboundMessage,
    Page,
    StatusEntry,
    new_id,
)
from server.domain.paging import PageRequest
from server.domain.provider import AttemptRecord
from server.domain.status import DeliveryStatus, advances
from server.storage import attempts as attempt_log
from server.storage import events as event_log
from server.storage import fallback, webhooks
from server.storage.keyset import Order, keyset_page
from server.storage.schema import idempotency, messages, status_history
from server.storage.sql import insert_for
from server.storage.writer import LATER_HISTORY, LATER_MESSAGES, StatusMove, Tx
from server.telemetry.tracing import trace_id_in

PENDING, CLAIMED, DONE = "PENDING", "CLAIMED", "DONE"
# What the attempt log says of a send that started and never reported back.
NO_OUTCOME = "NO_OUTCOME"
RESENT_REASON = "started with no outcome before its lease ran out; resent, may be a duplicate"
IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    key: str
    request_hash: str

    @staticmethod
    def of(key: str, request_bytes: bytes) -> IdempotencyKey:
        return IdempotencyKey(key, hashlib.sha256(request_bytes).hexdigest())


@dataclass(frozen=True, slots=True)
class AcceptResult:
    messages: tuple[OutboundMessage, ...]
    replay: bytes | None = None


async def accept(
    tx: Tx,
    tenant_id: str,
    drafts: Sequence[OutboundDraft],
    idem: IdempotencyKey | None,
    render: Callable[[Sequence[OutboundMessage]], bytes],
    traceparent: str = "",
) -> AcceptResult:
    if idem is not None:
        # Claim the key first: on PostgreSQL a concurrent holder makes this wait
        # until it commits, so exactly one request per key inserts messages.
        claim = (
            insert_for(tx.conn, idempotency)
            .values(
                tenant_id=tenant_id,
                key=idem.key,
                request_hash=idem.request_hash,
                response=b"",
                created_at=tx.now,
            )
            .on_conflict_do_nothing()
            .returning(idempotency.c.key)
        )
        if (await tx.conn.execute(claim)).first() is None and not await _take_over_expired(
            tx, tenant_id, idem
        ):
            row = (
                await tx.conn.execute(
                    select(idempotency.c.request_hash, idempotency.c.response).where(
                        idempotency.c.tenant_id == tenant_id, idempotency.c.key == idem.key
                    )
                )
            ).one()
            if row.request_hash != idem.request_hash:
                raise already_exists(
                    "IDEMPOTENCY_KEY_REUSED",
                    "this idempotency key was already used with a different request",
                )
            return AcceptResult((), bytes(row.response))

    pairs = [_new_message(tx.now, tenant_id, d) for d in drafts]
    created = [m for m, _ in pairs]
    # Nothing in the group reads these back, so they join the group's
    # multi-row inserts; a duplicate id fails the group's attempt instead,
    # and the writer then finds whose it was.
    for m, d in pairs:
        await tx.later(LATER_MESSAGES, _insert_messages, _row(m, d, traceparent))
        reason = d.refusal
        await tx.later(LATER_HISTORY, _insert_history, _history_row(m.id, m.status, reason, tx.now))
        await event_log.append_later(tx, tenant_id, status_event(m, m.status, reason))
        tx.moves.append(StatusMove(m.channel_id, m.status.value, tx.now, tx.now))
    result = tuple(created)
    if idem is not None:
        await tx.conn.execute(
            update(idempotency)
            .where(idempotency.c.tenant_id == tenant_id, idempotency.c.key == idem.key)
            .values(response=render(result))
        )
    return AcceptResult(result)


async def _insert_messages(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await conn.execute(messages.insert(), rows)


async def _insert_history(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await conn.execute(status_history.insert(), rows)


async def insert_history_later(
    tx: Tx, message_id: str, status: DeliveryStatus, reason: str
) -> None:
    """A status history row, joining the group's multi-row insert."""
    await tx.later(LATER_HISTORY, _insert_history, _history_row(message_id, status, reason, tx.now))


def _history_row(message_id: str, status: DeliveryStatus, reason: str, ts: int) -> dict[str, Any]:
    return {"message_id": message_id, "status": status.value, "reason": reason, "ts": ts}


async def _take_over_expired(tx: Tx, tenant_id: str, idem: IdempotencyKey) -> bool:
    """A key older than its retention window is free again; one UPDATE decides who gets it."""
    taken = await tx.conn.execute(
        update(idempotency)
        .where(
            idempotency.c.tenant_id == tenant_id,
            idempotency.c.key == idem.key,
            idempotency.c.created_at < tx.now - IDEMPOTENCY_TTL_MS,
        )
        .values(request_hash=idem.request_hash, response=b"", created_at=tx.now)
        .returning(idempotency.c.key)
    )
    return taken.first() is not None


async def prune(tx: Tx) -> None:
    await tx.conn.execute(
        delete(idempotency).where(idempotency.c.created_at < tx.now - IDEMPOTENCY_TTL_MS)
    )


def _new_message(
    now: int, tenant_id: str, d: OutboundDraft
) -> tuple[OutboundMessage, OutboundDraft]:
    status = DeliveryStatus.SCHEDULED if d.due_at > now else DeliveryStatus.ACCEPTED
    if d.refusal:
        status = DeliveryStatus.FAILED
    return OutboundMessage(
        id=d.message_id or new_id(),
        tenant_id=tenant_id,
        channel_id=d.channel_id,
        destination=d.destination,
        type=d.type,
        text=d.text,
        content=d.content,
        conversation_id=d.conversation_id,
        correlation_id=d.correlation_id,
        status=status,
        priority=d.priority,
        due_at=max(d.due_at, now),
        expire_at=d.expire_at,
        attempts=0,
        created_at=now,
        mask=d.mask,
        history=(StatusEntry(status, now, d.refusal),),
        last_error=d.refusal,
        batch_id=d.batch_id,
    ), d


def _row(m: OutboundMessage, d: OutboundDraft, traceparent: str) -> dict[str, Any]:
    return {
        "id": m.id,
        "tenant_id": m.tenant_id,
        "channel_id": m.channel_id,
        "destination": m.destination,
        "type": m.type,
        "text": m.text,
        "content": dict(m.content),
        "conversation_id": m.conversation_id,
        "correlation_id": m.correlation_id,
        "status": m.status.value,
        "priority": m.priority,
        "due_at": m.due_at,
        "expire_at": m.expire_at,
        # A refused message is settled at acceptance: the dispatcher never claims it.
        "dispatch_state": DONE if d.refusal else PENDING,
        "lease_until": None,
        "attempts": 0,
        "provider_message_id": None,
        "last_error": d.refusal,
        "mask": int(m.mask),
        "created_at": m.created_at,
        "updated_at": m.created_at,
        "notify_url": d.notify_url or None,
        "callback_data": d.callback_data or None,
        "requested_receipts": list(d.requested_receipts),
        "segments": 1,
        "request_id": d.request_id or None,
        "traceparent": traceparent or None,
        "batch_id": d.batch_id or None,
    }


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


# The dispatch statements run several times a second under load: built once,
# they skip SQLAlchemy's statement building and cache-key work on every call.
def _due_query(on_channels: bool) -> Any:
    now: Any = bindparam("now")
    query = select(messages).where(
        or_(
            and_(messages.c.dispatch_state == PENDING, messages.c.due_at <= now),
            and_(messages.c.dispatch_state == CLAIMED, messages.c.lease_until < now),
        )
    )
    if on_channels:
        query = query.where(messages.c.channel_id.in_(bindparam("channels", expanding=True)))
    return (
        query.order_by(messages.c.priority.desc(), messages.c.due_at)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
    )


_DUE = _due_query(on_channels=False)
_DUE_ON = _due_query(on_channels=True)
_CLAIM = (
    update(messages)
    .where(messages.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        dispatch_state=CLAIMED,
        lease_until=bindparam("lease_until"),
        attempts=messages.c.attempts + 1,
        updated_at=bindparam("now"),
        attempt_started_at=None,
        attempt_provider=None,
    )
)
# A start counts only for the claim it belongs to: the attempt number fences
# off a claimer whose claim was taken over, and a start already recorded
# fences off a second holder of the same claim.
_START = (
    update(messages)
    .where(
        tuple_(messages.c.id, messages.c.attempts).in_(bindparam("claims", expanding=True)),
        messages.c.dispatch_state == CLAIMED,
        messages.c.attempt_started_at.is_(None),
    )
    .values(attempt_started_at=bindparam("now"), attempt_provider=bindparam("provider"))
    .returning(messages.c.id)
)
# Claims that never reached a provider go back at once, and do not count as attempts.
_RELEASE_UNSTARTED = (
    update(messages)
    .where(messages.c.dispatch_state == CLAIMED, messages.c.attempt_started_at.is_(None))
    .values(
        dispatch_state=PENDING,
        lease_until=None,
        attempts=messages.c.attempts - 1,
        updated_at=bindparam("now"),
    )
)
_LOCK_MANY = (
    select(messages)
    .where(messages.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(messages.c.id)
    .with_for_update()
)
_STATUS_COLUMNS = (
    "updated_at",
    "dispatch_state",
    "lease_until",
    "provider_message_id",
    "segments",
    "last_error",
    "status",
)
_SET_STATUS_MANY = (
    update(messages)
    .where(messages.c.id == bindparam("_id"))
    .values({name: bindparam(name) for name in _STATUS_COLUMNS})
)


async def claim_due(
    tx: Tx, limit: int, lease_ms: int, channels: Sequence[str] | None = None
) -> list[Delivery]:
    """Claim due work, highest priority first, then oldest due time.

    FOR UPDATE SKIP LOCKED lets several PostgreSQL workers claim side by side
    without taking the same row; SQLite has one writer and ignores it.
    """
    await tx.flush(upto=LATER_MESSAGES)  # messages accepted earlier in this group
    params: dict[str, Any] = {"now": tx.now, "limit": limit}
    if channels is None:
        query = _DUE
    else:
        query = _DUE_ON
        params["channels"] = list(channels)
    rows = (await tx.conn.execute(query, params)).all()
    if not rows:
        return []
    # A lapsed claim whose send had started may have reached the provider:
    # it goes again (at least once), and its log says so.
    unanswered = [r for r in rows if r.dispatch_state == CLAIMED and r.attempt_started_at]
    if unanswered:
        await attempt_log.record_many(
            tx,
            [
                (
                    r.id,
                    [
                        AttemptRecord(
                            r.channel_id,
                            r.attempt_provider or "",
                            "FAILED",
                            error_code=NO_OUTCOME,
                            reason=RESENT_REASON,
                        )
                    ],
                )
                for r in unanswered
            ],
        )
    await tx.conn.execute(
        _CLAIM, {"ids": [r.id for r in rows], "lease_until": tx.now + lease_ms, "now": tx.now}
    )
    return [
        Delivery(
            message_id=r.id,
            tenant_id=r.tenant_id,
            channel_id=r.channel_id,
            destination=r.destination,
            type=r.type,
            text=r.text,
            content=r.content,
            attempt=r.attempts + 1,
            expire_at=r.expire_at,
            accepted_at=r.created_at,
            trace_context=r.traceparent or "",
        )
        for r in rows
    ]


async def start_many(tx: Tx, starts: Sequence[tuple[Delivery, str]]) -> list[bool]:
    """Record that these claims' requests are about to go to their providers.

    Returns, for each, whether its claim still holds; one whose claim was
    taken over must not be sent.
    """
    by_provider: dict[str, list[tuple[str, int]]] = {}
    for delivery, provider in starts:
        by_provider.setdefault(provider, []).append((delivery.message_id, delivery.attempt))
    started: set[str] = set()
    for provider, claims in by_provider.items():
        found = await tx.conn.execute(
            _START, {"claims": claims, "now": tx.now, "provider": provider}
        )
        started.update(found.scalars())
    return [delivery.message_id in started for delivery, _ in starts]


async def start_one(tx: Tx, start: tuple[Delivery, str]) -> bool:
    return (await start_many(tx, [start]))[0]


async def release_unstarted(tx: Tx) -> None:
    """Give back every claim that never reached a provider, whoever took it.

    A claimer that is still alive loses nothing but the claim: its start is
    fenced off (see _START), and the message is sent once, by whoever claims it next.
    """
    await tx.conn.execute(_RELEASE_UNSTARTED, {"now": tx.now})


async def release(tx: Tx, message_id: str) -> None:
    await release_many(tx, [message_id])


async def release_many(tx: Tx, message_ids: Sequence[str]) -> None:
    await tx.conn.execute(
        update(messages)
        .where(
            messages.c.id.in_(message_ids),
            messages.c.dispatch_state == CLAIMED,
            # A claim another holder has started is not this caller's to give back.
            messages.c.attempt_started_at.is_(None),
        )
        .values(
            dispatch_state=PENDING,
            lease_until=None,
            attempts=messages.c.attempts - 1,
            updated_at=tx.now,
        )
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
    row = (
        await tx.conn.execute(select(messages).where(messages.c.id == message_id).with_for_update())
    ).first()
    if row is None:
        return False
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
    await tx.conn.execute(update(messages).where(messages.c.id == message_id).values(**values))
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
    found = (await tx.conn.execute(_LOCK_MANY, {"ids": sorted(ids)})).all()
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
        await tx.conn.execute(_SET_STATUS_MANY, updates)
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
