"""Webhook outcomes, dead letters and redrive.

Every POST is logged in webhook_attempts. A row that gives up (too old, 410
Gone, or its tenant webhook disabled) stays in the outbox as DEAD; a redrive
puts it back to PENDING under the same id, so its webhook-id does not change.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import failed_precondition, not_found
from server.domain.models import Page
from server.domain.paging import PageRequest
from server.domain.webhook_delivery import (
    GONE,
    TENANT,
    DeadLetter,
    EndpointState,
    PostOutcome,
    Redriven,
    WebhookAttemptEntry,
    delivery_id,
)
from server.storage import webhook_endpoints as endpoints
from server.storage.keyset import Order, keyset_page
from server.storage.tx import Tx
from server.storage.webhook_schema import webhook_attempts, webhooks
from server.storage.webhooks import DEAD, DONE, PENDING, WebhookJob


async def settle(
    tx: Tx, job: WebhookJob, outcome: PostOutcome, retry_at: int | None, disable_after_ms: int
) -> bool:
    """Record one POST and what follows from it; True when it disabled the tenant webhook.

    retry_at is when to try again, or None when the row is out of retries.
    """
    last = (
        await tx.conn.execute(
            select(func.max(webhook_attempts.c.number)).where(
                webhook_attempts.c.webhook_id == job.id
            )
        )
    ).scalar() or 0
    await tx.conn.execute(
        webhook_attempts.insert().values(
            tenant_id=job.tenant_id,
            webhook_id=job.id,
            number=last + 1,
            http_status=outcome.http_status,
            error=outcome.error,
            latency_ms=outcome.latency_ms,
            ts=outcome.at,
        )
    )
    values: dict[str, Any] = {
        "last_status": outcome.http_status or None,
        "last_error": outcome.error,
        "first_attempt_at": func.coalesce(webhooks.c.first_attempt_at, outcome.at),
        "last_attempt_at": outcome.at,
    }
    disabled = disabled_now = False
    if outcome.ok:
        values.update(state=DONE, last_error="")
        if job.endpoint == TENANT:
            await endpoints.healthy(tx, job.tenant_id, job.url)
    else:
        if job.endpoint == TENANT:
            disabled, disabled_now = await endpoints.failed(
                tx, job.tenant_id, job.url, outcome, disable_after_ms
            )
        # A 410 to a notifyUrl ends that delivery; to the tenant webhook it
        # disabled the endpoint above.
        if retry_at is None or disabled or outcome.http_status == GONE:
            values.update(state=DEAD, dead_at=tx.now)
        else:
            values.update(state=PENDING, next_attempt_at=retry_at)
    await tx.conn.execute(update(webhooks).where(webhooks.c.id == job.id).values(**values))
    return disabled_now


async def attempts_for_message(
    conn: AsyncConnection, tenant_id: str, message_id: str
) -> list[WebhookAttemptEntry]:
    rows = (
        await conn.execute(
            select(
                webhook_attempts,
                webhooks.c.url,
                webhooks.c.endpoint,
            )
            .join(webhooks, webhooks.c.id == webhook_attempts.c.webhook_id)
            .where(webhooks.c.tenant_id == tenant_id, webhooks.c.message_id == message_id)
            .order_by(webhook_attempts.c.ts, webhook_attempts.c.id)
        )
    ).all()
    return [
        WebhookAttemptEntry(
            delivery_id(r.webhook_id),
            r.url,
            r.endpoint,
            r.number,
            r.http_status,
            r.error,
            r.latency_ms,
            r.ts,
        )
        for r in rows
    ]


def _in_range(tenant_id: str, start: int, end: int, url: str) -> list[Any]:
    where = [webhooks.c.tenant_id == tenant_id, webhooks.c.state == DEAD]
    if start:
        where.append(webhooks.c.dead_at >= start)
    if end:
        where.append(webhooks.c.dead_at < end)
    if url:
        where.append(webhooks.c.url == url)
    return where


async def list_page(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    page: PageRequest,
    start: int = 0,
    end: int = 0,
    url: str = "",
) -> Page[DeadLetter]:
    query = select(webhooks).where(*_in_range(tenant_id, start, end, url))
    return await keyset_page(conn, query, OLDEST_FIRST, page, _dead_letter)


OLDEST_FIRST = Order((webhooks.c.dead_at, webhooks.c.id))


def _dead_letter(r: Any) -> DeadLetter:
    return DeadLetter(
        delivery_id=delivery_id(r.id),
        url=r.url,
        endpoint=r.endpoint,
        message_id=r.message_id or "",
        last_status=r.last_status or 0,
        last_error=r.last_error,
        attempts=r.attempts,
        created_at=r.created_at,
        first_attempt_at=r.first_attempt_at or 0,
        last_attempt_at=r.last_attempt_at or 0,
        dead_at=r.dead_at or 0,
        payload=r.payload,
    )


def _redriven(tx: Tx, url: str | None = None) -> dict[str, Any]:
    # attempts restarts, so the backoff does too; the attempt log keeps them all.
    values: dict[str, Any] = {
        "state": PENDING,
        "next_attempt_at": tx.now,
        "attempts": 0,
        "redriven_at": tx.now,
        "dead_at": None,
    }
    if url is not None:
        values["url"] = url
    return values


def _usable(endpoint: EndpointState) -> bool:
    return bool(endpoint.url) and not endpoint.disabled


async def redrive_one(tx: Tx, tenant_id: str, row_id: int) -> None:
    row = (
        await tx.conn.execute(
            select(webhooks.c.id, webhooks.c.endpoint).where(
                webhooks.c.tenant_id == tenant_id, webhooks.c.id == row_id, webhooks.c.state == DEAD
            )
        )
    ).first()
    if row is None:
        raise not_found("dead letter", delivery_id(row_id))
    url = None
    if row.endpoint == TENANT:
        # Tenant deliveries go to the webhook as it is now, not as it was.
        endpoint = await endpoints.state(tx.conn, tenant_id)
        _require_usable(endpoint)
        url = endpoint.url
    await tx.conn.execute(
        update(webhooks).where(webhooks.c.id == row_id).values(_redriven(tx, url))
    )


def _require_usable(endpoint: EndpointState) -> None:
    if not endpoint.url:
        raise failed_precondition("WEBHOOK_NOT_SET", "no webhook URL is set for this tenant")
    if endpoint.disabled:
        raise failed_precondition(
            "ENDPOINT_DISABLED", "the tenant webhook is disabled; enable it first"
        )


async def redrive_range(tx: Tx, tenant_id: str, start: int, end: int, url: str) -> Redriven:
    where = _in_range(tenant_id, start, end, url)
    others = await tx.conn.execute(
        update(webhooks).where(*where, webhooks.c.endpoint != TENANT).values(_redriven(tx))
    )
    endpoint = await endpoints.state(tx.conn, tenant_id)
    tenant_rows = [*where, webhooks.c.endpoint == TENANT]
    if _usable(endpoint):
        ours = await tx.conn.execute(
            update(webhooks).where(*tenant_rows).values(_redriven(tx, endpoint.url))
        )
        return Redriven(others.rowcount + ours.rowcount, 0)
    skipped = (
        await tx.conn.execute(select(func.count()).select_from(webhooks).where(*tenant_rows))
    ).scalar_one()
    return Redriven(others.rowcount, skipped)
