"""Stored messages as CIM messages, in the JSON form of cim.v1.CimMessage.

Enum values use their full names so the transports can parse the result
strictly; event consumers see the same spelling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.domain.inbound import ReceivedMessage
from server.domain.models import OutboundMessage
from server.domain.status import DeliveryStatus

_MEDIA_KINDS = {
    "image": "MEDIA_KIND_IMAGE",
    "video": "MEDIA_KIND_VIDEO",
    "audio": "MEDIA_KIND_AUDIO",
    "voice": "MEDIA_KIND_AUDIO",
    "document": "MEDIA_KIND_FILE",
}


@dataclass(frozen=True, slots=True)
class SessionItem:
    """One message of a session, either direction, as ListSessionMessages returns it."""

    id: str
    created_at: int
    cim: Mapping[str, Any]
    status: DeliveryStatus | None = None
    queue: str = ""
    agent: str = ""


def _compact(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in ("", None, {}, [])}


def inbound_cim(
    m: ReceivedMessage, message_id: str, session_id: str, conversation_id: str, received_at: int
) -> dict[str, Any]:
    """The customer's message with the customer and channel data filled in."""
    first, _, last = m.contact_name.partition(" ")
    header = {
        "sender": _compact(
            {"id": m.contact_id, "type": "SENDER_TYPE_CUSTOMER", "senderName": m.contact_name}
        ),
        "channelData": _compact(
            {
                "serviceIdentifier": m.lane or m.channel_id,
                "channelCustomerIdentifier": m.address,
                "customerFirstName": first,
                "customerLastName": last,
            }
        ),
        "timestamp": m.timestamp or received_at,
        "channelSessionId": session_id,
        "conversationId": conversation_id,
        "customer": _compact({"id": m.contact_id, "firstName": first}),
        "providerMessageId": m.external_id,
    }
    return {
        "id": message_id,
        "direction": "DIRECTION_INBOUND",
        "header": _compact(header),
        "body": dict(m.body),
    }


def outbound_cim(m: OutboundMessage, session_id: str) -> dict[str, Any]:
    """An outbound message as the session history shows it; masked text stays hidden."""
    header = {
        "sender": {"id": m.channel_id, "type": "SENDER_TYPE_SYSTEM"},
        "channelData": {
            "serviceIdentifier": m.channel_id,
            "channelCustomerIdentifier": m.destination,
        },
        "timestamp": m.created_at,
        "channelSessionId": session_id,
        "conversationId": m.conversation_id,
        "providerMessageId": m.provider_message_id,
    }
    return {
        "id": m.id,
        "direction": "DIRECTION_OUTBOUND",
        "header": _compact(header),
        "body": _outbound_body(m),
    }


def _outbound_body(m: OutboundMessage) -> dict[str, Any]:
    text = "" if m.mask else m.text
    content = m.content
    if m.type in _MEDIA_KINDS and not m.mask:
        attachment = _compact(
            {"mediaUrl": content.get("mediaUrl", ""), "fileName": content.get("filename", "")}
        )
        return {
            "media": _compact(
                {
                    "kind": _MEDIA_KINDS[m.type],
                    "caption": content.get("caption", ""),
                    "attachment": attachment,
                }
            )
        }
    if m.type == "location" and content.get("latitude") is not None and not m.mask:
        place = {k: content.get(k, "") for k in ("name", "address", "url")}
        return {
            "location": {
                "latitude": content["latitude"],
                "longitude": content.get("longitude") or 0.0,
                **_compact(place),
            }
        }
    return {"plain": {"markdownText": text}}
