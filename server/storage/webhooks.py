"""The webhook outbox: rows written with the change they report, sent later.

Rows sharing an ordering key go out one at a time, oldest first, so a
message's receipts reach the receiver in the order they happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, and_, bindparam, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.webhook_delivery import (
    NOTIFY_URL,
    TENANT,
    StatusCallback,
    receipt_wanted,
    status_callback,
)
from server.domain.webhook_signing import new_secret
from server.storage.sql import insert_for
from server.storage.tx import Tx
from server.storage.webhook_schema import webhook_secrets, webhooks

PENDING, DONE, DEAD = "PENDING", "DONE", "DEAD"

# The JSON document POSTed to the receiver.
Payload = dict[str, Any]


@dataclass(frozen=True, slots=True)
class WebhookJob:
    id: int
    tenant_id: str
    url: str
    payload: Payload
    # Counts this attempt: the claim that produced the job already added it.
    attempts: int
    created_at: int
    secret: str
    endpoint: str = TENANT
    # Retries give up this long after it: the time queued, or of the last redrive.
    age_from: int = 0
    # The trace of the change the payload reports, "" if none.
    trace_context: str = ""


@dataclass(frozen=True, slots=True)
class DeadWebhook:
    id: int
    tenant_id: str
    ordering_key: str
    url: str
    payload: Payload
    attempts: int
    last_error: str
    created_at: int


async def secret_for(tx: Tx, tenant_id: str) -> str:
    """The tenant's signing secret, created on first use."""
    await tx.conn.execute(
        insert_for(tx.conn, webhook_secrets)
        .values(tenant_id=tenant_id, secret=new_secret(), created_at=tx.now)
        .on_conflict_do_nothing()
    )
    secret: str = (
        await tx.conn.execute(
            select(webhook_secrets.c.secret).where(webhook_secrets.c.tenant_id == tenant_id)
        )
    ).scalar_one()
    return secret


async def enqueue(
    tx: Tx,
    tenant_id: str,
    ordering_key: str,
    url: str,
    payload: Payload,
    traceparent: str | None = None,
    *,
    endpoint: str = TENANT,
    message_id: str = "",
    dead_reason: str = "",
) -> int:
    """Queue a POST; with dead_reason it is kept as a dead letter at once, never sent."""
    new_id: int = (
        await tx.conn.execute(
            webhooks.insert()
            .values(
                tenant_id=tenant_id,
                ordering_key=ordering_key,
                url=url,
                payload=payload,
                state=DEAD if dead_reason else PENDING,
                attempts=0,
                next_attempt_at=tx.now,
                last_error=dead_reason,
                created_at=tx.now,
                endpoint=endpoint,
                message_id=message_id or None,
                dead_at=tx.now if dead_reason else None,
                traceparent=traceparent or None,
            )
            .returning(webhooks.c.id)
        )
    ).scalar_one()
    if not dead_reason:
        tx.webhooks += 1
    return new_id


async def enqueue_receipt(tx: Tx, message_row: Row[Any], status: str, reason: str) -> None:
    """Queue a status callback if the message asked for this status to be reported."""
    if not receipt_wanted(message_row.notify_url, message_row.requested_receipts, status):
        return
    payload = status_callback(
        StatusCallback(
            message_id=message_row.id,
            correlation_id=message_row.correlation_id,
            channel_id=message_row.channel_id,
            destination=message_row.destination,
            callback_data=message_row.callback_data or "",
        ),
        status,
        reason,
        tx.now,
    )
    await enqueue(
        tx,
        message_row.tenant_id,
        message_row.id,
        message_row.notify_url,
        payload,
        message_row.traceparent,
        endpoint=NOTIFY_URL,
        message_id=message_row.id,
    )


# Built once: the sender asks this after every commit that queued a webhook.
_ANY_DUE = (
    select(webhooks.c.id)
    .where(webhooks.c.state == PENDING, webhooks.c.next_attempt_at <= bindparam("now"))
    .limit(1)
)


async def any_due(conn: AsyncConnection, now: int) -> bool:
    return (await conn.execute(_ANY_DUE, {"now": now})).first() is not None


async def claim_due(tx: Tx, limit: int, lease_ms: int) -> list[WebhookJob]:
    """Claim due rows, at most the oldest pending one per ordering key.

    A claim is a lease: next_attempt_at moves to the lease's end, so if the
    sender dies mid-attempt the row simply comes due again. FOR UPDATE SKIP
    LOCKED keeps concurrent PostgreSQL claimers off each other's rows.
    """
    earlier = webhooks.alias("earlier")
    blocked = exists().where(
        and_(
            earlier.c.tenant_id == webhooks.c.tenant_id,
            earlier.c.ordering_key == webhooks.c.ordering_key,
            earlier.c.state == PENDING,
            earlier.c.id < webhooks.c.id,
        )
    )
    rows = (
        await tx.conn.execute(
            select(webhooks)
            .where(webhooks.c.state == PENDING, webhooks.c.next_attempt_at <= tx.now, ~blocked)
            .order_by(webhooks.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=webhooks)
        )
    ).all()
    if not rows:
        return []
    await tx.conn.execute(
        update(webhooks)
        .where(webhooks.c.id.in_([r.id for r in rows]))
        .values(next_attempt_at=tx.now + lease_ms, attempts=webhooks.c.attempts + 1)
    )
    by_tenant = {t: await secret_for(tx, t) for t in sorted({r.tenant_id for r in rows})}
    return [
        WebhookJob(
            id=r.id,
            tenant_id=r.tenant_id,
            url=r.url,
            payload=r.payload,
            attempts=r.attempts + 1,
            created_at=r.created_at,
            secret=by_tenant[r.tenant_id],
            endpoint=r.endpoint,
            age_from=r.redriven_at or r.created_at,
            trace_context=r.traceparent or "",
        )
        for r in rows
    ]


async def mark_done(tx: Tx, webhook_id: int) -> None:
    await _set(tx, webhook_id, state=DONE, last_error="")


async def mark_retry(tx: Tx, webhook_id: int, next_attempt_at: int, error: str) -> None:
    await _set(tx, webhook_id, state=PENDING, next_attempt_at=next_attempt_at, last_error=error)


async def mark_dead(tx: Tx, webhook_id: int, error: str) -> None:
    """Give up; the row stays, as a dead letter, for inspection or replay."""
    await _set(tx, webhook_id, state=DEAD, last_error=error, dead_at=tx.now)


async def _set(tx: Tx, webhook_id: int, **values: Any) -> None:
    await tx.conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(**values))


async def list_dead(conn: AsyncConnection, tenant_id: str) -> list[DeadWebhook]:
    rows = (
        await conn.execute(
            select(webhooks)
            .where(webhooks.c.tenant_id == tenant_id, webhooks.c.state == DEAD)
            .order_by(webhooks.c.id)
        )
    ).all()
    return [
        DeadWebhook(
            id=r.id,
            tenant_id=r.tenant_id,
            ordering_key=r.ordering_key,
            url=r.url,
            payload=r.payload,
            attempts=r.attempts,
            last_error=r.last_error,
            created_at=r.created_at,
        )
        for r in rows
    ]


DONE_RETENTION_MS = 7 * 24 * 3600 * 1000


async def prune(tx: Tx) -> None:
    await tx.conn.execute(
        delete(webhooks).where(
            webhooks.c.state == DONE, webhooks.c.created_at < tx.now - DONE_RETENTION_MS
        )
    )
