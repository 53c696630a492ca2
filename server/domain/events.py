"""Events: what happened, in the platform's own terms. Transports render them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    CONTENT = "ContentEvent"
    CHAT_STATE = "ChatStateEvent"
    ACCEPT_STATUS = "AcceptStatusEvent"
    RICH_CONTENT = "RichContentEvent"
    DELIVERY_STATUS = "DeliveryStatusEvent"
    SESSION = "SessionEvent"
    THIRD_PARTY_ACTIVITY = "ThirdPartyActivityEvent"
    CONVERSATION_CHANGE = "ConversationChangeEvent"
    # Pushed by the tenant through /api/v1/event/push.
    CUSTOMER = "CustomerEvent"
    # The tenant webhook was disabled or enabled again.
    WEBHOOK_ENDPOINT = "WebhookEndpointEvent"


MESSAGING_NOTIFICATION = "ms.MessagingEventNotification"
CONVERSATION_NOTIFICATION = "cqm.ExConversationChangeNotification"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be written; the store assigns its cursor and sequence."""

    conversation_id: str
    type: EventType
    originator_id: str = "system"
    originator_role: str = "SYSTEM"
    message: str = ""
    content_type: str = ""
    message_id: str = ""
    status: str = ""
    reason: str = ""
    channel_id: str = ""
    customer_id: str = ""
    audience: str = "ALL"
    dialog_id: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as persisted: cursor orders all of a tenant's events."""

    cursor: int
    tenant_id: str
    sequence: int
    server_timestamp: int
    event: NewEvent

    @property
    def notification_type(self) -> str:
        if self.event.type is EventType.CONVERSATION_CHANGE:
            return CONVERSATION_NOTIFICATION
        return MESSAGING_NOTIFICATION


class CommittedEvents(tuple[StoredEvent, ...]):
    """The events of one commit, in cursor order.

    ``after`` is the highest cursor committed before them (any tenant), or None
    when unknown. Commits take turns, so consecutive commits chain: a reader
    that saw a commit ending at ``after`` has missed nothing before this one.
    ``webhooks`` counts the webhooks the commit queued for sending.
    """

    after: int | None
    webhooks: int

    def __new__(
        cls, events: Sequence[StoredEvent], after: int | None = None, webhooks: int = 0
    ) -> CommittedEvents:
        self = super().__new__(cls, events)
        self.after = after
        self.webhooks = webhooks
        return self
