"""The notification envelope as plain JSON, for transports that do not go through protobuf.

Field names and omissions follow the protobuf JSON mapping of cim.v1.Notification,
so a webhook body and a streamed notification are the same document; a test
holds the two renderings together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.domain.events import StoredEvent


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in ("", 0, None, {}, [])}


def change(stored: StoredEvent) -> dict[str, Any]:
    e = stored.event
    event = _compact(
        {
            "type": e.type.value,
            "message": e.message,
            "contentType": e.content_type,
            "messageId": e.message_id,
            "status": e.status,
            "reason": e.reason,
            "channelId": e.channel_id,
            "customerId": e.customer_id,
            "chatState": str(e.data.get("chatState", "")),
            "acceptStatus": str(e.data.get("acceptStatus", "")),
            "data": dict(e.data),
        }
    )
    return _compact(
        {
            "sequence": stored.sequence,
            "originatorId": e.originator_id,
            "originatorMetadata": _compact({"id": e.originator_id, "role": e.originator_role}),
            "serverTimestamp": stored.server_timestamp,
            "event": event,
            "conversationId": e.conversation_id,
            "dialogId": e.dialog_id or e.conversation_id,
            "messageAudience": e.audience,
        }
    )


def envelope(events: Sequence[StoredEvent]) -> dict[str, Any]:
    """One notification holding events of a single notification type."""
    return {
        "kind": "notification",
        "type": events[0].notification_type,
        "body": {"changes": [change(e) for e in events]},
    }
