"""Webhook deliveries as operators see them: attempts, dead letters, endpoint health."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Where a delivery goes: the tenant's webhook, or one message's notifyUrl.
TENANT = "TENANT"
NOTIFY_URL = "NOTIFY_URL"

# A receiver answering this wants no more deliveries at that URL.
GONE = 410
_DELIVERY_ID = re.compile(r"^msg_([1-9][0-9]{0,17})$")


def delivery_id(row_id: int) -> str:
    """The webhook-id header: one per delivery, the same on every retry and redrive."""
    return f"msg_{row_id}"


def row_of(delivery: str) -> int | None:
    found = _DELIVERY_ID.match(delivery)
    return int(found.group(1)) if found else None


def endpoint_conversation(tenant_id: str) -> str:
    """The conversation a tenant's endpoint events are sequenced in: one per tenant."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cimhub:webhook-endpoint:{tenant_id}"))


@dataclass(frozen=True, slots=True)
class StatusCallback:
    """What a message's status callback says about the message."""

    message_id: str
    correlation_id: str
    channel_id: str
    destination: str
    callback_data: str


def receipt_wanted(notify_url: str | None, requested: Sequence[str] | None, status: str) -> bool:
    """Whether the sender asked for this status at its notifyUrl."""
    return bool(notify_url) and status in (requested or ())


def status_callback(message: StatusCallback, status: str, reason: str, now: int) -> dict[str, Any]:
    """The body POSTed to a message's notifyUrl when its status changes."""
    return {
        "type": "message.status",
        "timestamp": now,
        "data": {
            "messageId": message.message_id,
            "correlationId": message.correlation_id,
            "channel": message.channel_id,
            "destination": message.destination,
            "status": status,
            "reason": reason,
            "callbackData": message.callback_data,
            "timestamp": now,
        },
    }


@dataclass(frozen=True, slots=True)
class PostOutcome:
    """What one POST got: an HTTP status (0 when no answer came) and how long it took."""

    http_status: int
    error: str
    latency_ms: int
    at: int

    @property
    def ok(self) -> bool:
        return 200 <= self.http_status < 300


@dataclass(frozen=True, slots=True)
class WebhookAttemptEntry:
    delivery_id: str
    url: str
    endpoint: str
    number: int
    http_status: int
    error: str
    latency_ms: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    delivery_id: str
    url: str
    endpoint: str
    message_id: str
    last_status: int
    last_error: str
    attempts: int
    created_at: int
    first_attempt_at: int
    last_attempt_at: int
    dead_at: int
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EndpointState:
    url: str
    disabled_at: int | None = None
    disabled_reason: str = ""
    failing_since: int | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


@dataclass(frozen=True, slots=True)
class Redriven:
    redriven: int
    skipped: int


def disable_reason(outcome: PostOutcome, failing_since: int, disable_after_ms: int) -> str:
    """Why a failed POST disables the tenant webhook, or "" when it does not."""
    if outcome.http_status == GONE:
        return "the receiver answered 410 Gone"
    if disable_after_ms > 0 and outcome.at - failing_since >= disable_after_ms:
        return f"every POST failed for {(outcome.at - failing_since) // 1000} s"
    return ""
