"""Cancelling messages, one or a whole batch, before they leave for a provider."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from server.domain.cancellation import DEFAULT_REASON, CancelResult
from server.domain.errors import not_found


class CancelStore(Protocol):
    async def cancel_messages(
        self, tenant_id: str, message_ids: Sequence[str], reason: str
    ) -> list[CancelResult]: ...

    async def cancel_batch(
        self, tenant_id: str, batch_id: str, reason: str
    ) -> list[CancelResult]: ...


async def cancel_message(
    store: CancelStore, tenant_id: str, message_id: str, reason: str = ""
) -> CancelResult:
    found = await store.cancel_messages(tenant_id, [message_id], reason or DEFAULT_REASON)
    if not found:
        raise not_found("message", message_id)
    return found[0]


async def cancel_batch(
    store: CancelStore, tenant_id: str, batch_id: str, reason: str = ""
) -> list[CancelResult]:
    """Every message of the batch, cancelled where it can still be."""
    found = (
        await store.cancel_batch(tenant_id, batch_id, reason or DEFAULT_REASON) if batch_id else []
    )
    if not found:
        raise not_found("batch", batch_id)
    return found
