"""Applying a provider's receipt, as a span of the message's trace and a log line."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from opentelemetry.trace import SpanKind

from server.domain.models import Receipt
from server.storage.receipts import Applied
from server.telemetry import tracing
from server.telemetry.logs import event

log = logging.getLogger(__name__)


class ReceiptStore(Protocol):
    async def apply_receipt(self, channel_id: str, receipt: Receipt) -> Applied: ...


async def record_receipt(store: ReceiptStore, channel_id: str, receipt: Receipt) -> Applied:
    started = time.time_ns()
    applied = await store.apply_receipt(channel_id, receipt)
    if not applied.message_id:
        # Parked until its message is known; the reconcile sweep applies it.
        event(
            log,
            "receipt.parked",
            "receipt %s on %s waits for its message",
            receipt.status.value,
            channel_id,
            channel=channel_id,
            status=receipt.status.value,
        )
        return applied
    # The message is known only once the receipt is applied, so the span is
    # opened after the fact, from when the receipt arrived.
    accepted_in = tracing.stored_context(applied.trace_context)
    span = tracing.tracer().start_span(
        f"receipt {channel_id}",
        context=accepted_in,
        kind=SpanKind.CONSUMER,
        links=tracing.link_to(accepted_in),
        start_time=started,
        attributes={
            "messaging.system": "cimhub",
            "messaging.operation.type": "process",
            "messaging.destination.name": channel_id,
            "messaging.message.id": applied.message_id,
            "cimhub.receipt.status": receipt.status.value,
            "cimhub.receipt.moved": applied.moved,
        },
    )
    span.end()
    event(
        log,
        "receipt",
        "receipt %s for %s on %s",
        receipt.status.value,
        applied.message_id,
        channel_id,
        trace_id=tracing.trace_id_of(span) or tracing.trace_id_in(applied.trace_context),
        message_id=applied.message_id,
        tenant=applied.tenant_id,
        channel=channel_id,
        status=receipt.status.value,
        moved=applied.moved,
    )
    return applied
