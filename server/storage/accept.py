"""Accepting outbound messages: stored durably, and once per idempotency key."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update

from server.domain.errors import already_exists
from server.domain.models import OutboundDraft, OutboundMessage, StatusEntry, new_ids
from server.domain.status import DeliveryStatus
from server.storage import direct
from server.storage import events as event_log
from server.storage.message_schema import idempotency, messages
from server.storage.messages import DONE, PENDING, insert_histories_later, status_event
from server.storage.sql import insert_for
from server.storage.tx import LATER_MESSAGES, StatusMove, Tx

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

    fresh = iter(new_ids(sum(1 for d in drafts if not d.message_id)))
    created = [_new_message(tx.now, tenant_id, d, d.message_id or next(fresh)) for d in drafts]
    # Nothing in the group reads these back, so they join the group's
    # multi-row inserts; a duplicate id fails the group's attempt instead,
    # and the writer then finds whose it was.
    await tx.later_all(
        LATER_MESSAGES,
        _insert_messages,
        [_row(m, d, traceparent) for m, d in zip(created, drafts, strict=True)],
    )
    await insert_histories_later(
        tx, [(m.id, m.status, d.refusal) for m, d in zip(created, drafts, strict=True)]
    )
    await event_log.append_all_later(
        tx,
        tenant_id,
        [status_event(m, m.status, d.refusal) for m, d in zip(created, drafts, strict=True)],
    )
    tx.moves.extend(StatusMove(m.channel_id, m.status.value, tx.now, tx.now) for m in created)
    result = tuple(created)
    if idem is not None:
        await tx.conn.execute(
            update(idempotency)
            .where(idempotency.c.tenant_id == tenant_id, idempotency.c.key == idem.key)
            .values(response=render(result))
        )
    return AcceptResult(result)


_MESSAGE_KEYS = (
    "id",
    "tenant_id",
    "channel_id",
    "destination",
    "type",
    "text",
    "content",
    "conversation_id",
    "correlation_id",
    "status",
    "priority",
    "due_at",
    "expire_at",
    "dispatch_state",
    "lease_until",
    "attempts",
    "provider_message_id",
    "last_error",
    "mask",
    "created_at",
    "updated_at",
    "notify_url",
    "callback_data",
    "requested_receipts",
    "segments",
    "request_id",
    "traceparent",
    "batch_id",
)
_insert_messages = direct.Insert(messages, _MESSAGE_KEYS)


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


def _new_message(now: int, tenant_id: str, d: OutboundDraft, message_id: str) -> OutboundMessage:
    status = DeliveryStatus.SCHEDULED if d.due_at > now else DeliveryStatus.ACCEPTED
    if d.refusal:
        status = DeliveryStatus.FAILED
    return OutboundMessage(
        id=message_id,
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
    )


def _row(m: OutboundMessage, d: OutboundDraft, traceparent: str) -> dict[str, Any]:
    # The keys of _MESSAGE_KEYS, which the insert is compiled for.
    return {
        "id": m.id,
        "tenant_id": m.tenant_id,
        "channel_id": m.channel_id,
        "destination": m.destination,
        "type": m.type,
        "text": m.text,
        # As they are: a batch's drafts share one content and one receipts
        # tuple, which the insert then encodes once.
        "content": m.content if type(m.content) is dict else dict(m.content),
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
        "requested_receipts": d.requested_receipts,
        "segments": 1,
        "request_id": d.request_id or None,
        "traceparent": traceparent or None,
        "batch_id": d.batch_id or None,
    }
