"""The tenant webhook's health: failures counted, disabled, enabled again."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import failed_precondition
from server.domain.events import EventType, NewEvent
from server.domain.webhook_delivery import (
    TENANT,
    EndpointState,
    PostOutcome,
    disable_reason,
    endpoint_conversation,
)
from server.storage import events as event_log
from server.storage.tx import Tx
from server.storage.webhook_schema import tenant_webhooks, webhooks

DEAD, PENDING = "DEAD", "PENDING"


async def state(conn: AsyncConnection, tenant_id: str) -> EndpointState:
    row = (
        await conn.execute(select(tenant_webhooks).where(tenant_webhooks.c.tenant_id == tenant_id))
    ).first()
    return _state(row)


def _state(row: Any) -> EndpointState:
    if row is None:
        return EndpointState(url="")
    return EndpointState(row.url, row.disabled_at, row.disabled_reason, row.failing_since)


async def healthy(tx: Tx, tenant_id: str, url: str) -> None:
    """A POST to the webhook succeeded: it is no longer failing."""
    await tx.conn.execute(
        update(tenant_webhooks)
        .where(
            tenant_webhooks.c.tenant_id == tenant_id,
            tenant_webhooks.c.url == url,
            tenant_webhooks.c.failing_since.is_not(None),
        )
        .values(failing_since=None)
    )


async def failed(
    tx: Tx, tenant_id: str, url: str, outcome: PostOutcome, disable_after_ms: int
) -> tuple[bool, bool]:
    """Count a failed POST; (the endpoint is disabled, it was disabled by this one)."""
    row = (
        await tx.conn.execute(
            select(tenant_webhooks)
            .where(tenant_webhooks.c.tenant_id == tenant_id)
            .with_for_update()
        )
    ).first()
    # A URL the tenant has since replaced says nothing about the current one.
    if row is None or row.url != url:
        return False, False
    if row.disabled_at is not None:
        return True, False
    since = row.failing_since if row.failing_since is not None else outcome.at
    reason = disable_reason(outcome, since, disable_after_ms)
    if not reason:
        if row.failing_since is None:
            await _set(tx, tenant_id, failing_since=since)
        return False, False
    await _set(tx, tenant_id, failing_since=since, disabled_at=tx.now, disabled_reason=reason)
    # What was waiting for the endpoint is kept, to be redriven once it is back.
    await tx.conn.execute(
        update(webhooks)
        .where(
            webhooks.c.tenant_id == tenant_id,
            webhooks.c.endpoint == TENANT,
            webhooks.c.url == url,
            webhooks.c.state == PENDING,
        )
        .values(state=DEAD, dead_at=tx.now, last_error=event_log.ENDPOINT_DISABLED)
    )
    event_log.forget_tenant_webhooks(tx)
    await _announce(tx, tenant_id, url, "DISABLED", reason)
    return True, True


async def enable(tx: Tx, tenant_id: str) -> EndpointState:
    row = (
        await tx.conn.execute(
            select(tenant_webhooks).where(tenant_webhooks.c.tenant_id == tenant_id)
        )
    ).first()
    if row is None or not row.url:
        raise failed_precondition("WEBHOOK_NOT_SET", "no webhook URL is set for this tenant")
    if row.disabled_at is not None:
        await _set(tx, tenant_id, disabled_at=None, disabled_reason="", failing_since=None)
        event_log.forget_tenant_webhooks(tx)
        await _announce(tx, tenant_id, row.url, "ENABLED", "enabled over the API")
    return EndpointState(row.url)


async def _set(tx: Tx, tenant_id: str, **values: Any) -> None:
    await tx.conn.execute(
        update(tenant_webhooks)
        .where(tenant_webhooks.c.tenant_id == tenant_id)
        .values(updated_at=tx.now, **values)
    )


async def _announce(tx: Tx, tenant_id: str, url: str, status: str, reason: str) -> None:
    """Tell the tenant's event stream; the webhook copy waits as a dead letter if disabled."""
    await event_log.append_later(
        tx,
        tenant_id,
        NewEvent(
            conversation_id=endpoint_conversation(tenant_id),
            type=EventType.WEBHOOK_ENDPOINT,
            message=f"webhook endpoint {status.lower()}",
            content_type="text/plain",
            status=status,
            reason=reason,
            data={"url": url, "at": tx.now},
        ),
    )
