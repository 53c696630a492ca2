"""Stored messages as CIM messages, in the JSON form of cim.v1.CimMessage.

Enum values use their full names so the transports can parse the result
strictly; event consumers see the same spelling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.domain.errors import FieldViolation, invalid
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


# -- bodies in the public model's form ----------------------------------------------------

_PUBLIC_MEDIA = {
    "IMAGE": "MEDIA_KIND_IMAGE",
    "VIDEO": "MEDIA_KIND_VIDEO",
    "AUDIO": "MEDIA_KIND_AUDIO",
    "FILE": "MEDIA_KIND_FILE",
    "STICKER": "MEDIA_KIND_STICKER",
}
_MEDIA_FIELDS = frozenset({"caption", "attachment", "markdownText", "additionalDetails"})
# Each public type's own fields, by their JSON names.
PUBLIC_BODY_FIELDS: Mapping[str, frozenset[str]] = {
    "PLAIN": frozenset({"markdownText"}),
    **{name: _MEDIA_FIELDS for name in _PUBLIC_MEDIA},
    "LOCATION": frozenset({"location", "markdownText", "additionalDetails"}),
    "CONTACT": frozenset({"contacts", "markdownText", "additionalDetails"}),
    "URL": frozenset({"markdownText", "mediaUrl"}),
    "BUTTON": frozenset({"markdownText", "buttonMessageType", "buttons", "additionalDetails"}),
    "WRAPUP": frozenset({"wrapups", "markdownText", "note"}),
}
# Fields only the public form has; location belongs to both forms.
_PUBLIC_ONLY = frozenset().union(*PUBLIC_BODY_FIELDS.values()) - {"location"}
# Place details the public form keeps in additionalDetails and the typed form names.
_PLACE_KEYS = ("name", "address", "url")


def typed_body(body: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A message body in the typed form, whichever form it came in.

    ``body`` is the JSON form of a MessageBody; a body with ``type`` set is in the
    public form, and may carry only that type's own fields.
    """
    kind = str(body.get("type", ""))
    if not kind:
        stray = [k for k in body if k in _PUBLIC_ONLY]
        if stray:
            raise invalid(
                [FieldViolation(f"{path}.{k}", "a public-form field; set type too") for k in stray]
            )
        return dict(body)
    name = kind.upper()
    allowed = PUBLIC_BODY_FIELDS.get(name)
    if allowed is None:
        known = ", ".join(PUBLIC_BODY_FIELDS)
        raise invalid([FieldViolation(f"{path}.type", f"unknown type {kind!r}; one of {known}")])
    stray = [k for k in body if k != "type" and k not in allowed]
    if stray:
        raise invalid(
            [FieldViolation(f"{path}.{k}", f"not a field of {name} bodies") for k in stray]
        )
    return _from_public(name, body)


def _from_public(name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    def pick(*keys: str) -> dict[str, Any]:
        return {k: body[k] for k in keys if k in body}

    if name == "PLAIN":
        return {"plain": pick("markdownText")}
    if name in _PUBLIC_MEDIA:
        media = {"kind": _PUBLIC_MEDIA[name], **pick(*sorted(_MEDIA_FIELDS))}
        return {"media": media}
    if name == "LOCATION":
        location = {**body.get("location", {}), **pick("markdownText", "additionalDetails")}
        details = body.get("additionalDetails")
        if isinstance(details, Mapping):
            for key in _PLACE_KEYS:
                if isinstance(details.get(key), str) and key not in location:
                    location[key] = details[key]
        return {"location": location}
    if name == "CONTACT":
        contact = pick("markdownText", "additionalDetails")
        if "contacts" in body:
            contact["sharedContacts"] = body["contacts"]
        return {"contact": contact}
    if name == "URL":
        url = pick("markdownText")
        if "mediaUrl" in body:
            url["url"] = body["mediaUrl"]
        return {"url": url}
    if name == "BUTTON":
        button = pick("markdownText", "buttonMessageType", "additionalDetails")
        if "buttons" in body:
            button["buttons"] = [_button(b) for b in body["buttons"]]
        return {"button": button}
    wrap_up = pick("wrapups", "markdownText")
    if "note" in body:
        wrap_up["notes"] = body["note"]
    return {"wrapUp": wrap_up}


def _button(option: Mapping[str, Any]) -> dict[str, Any]:
    renamed = {"title": "label"}
    return {renamed.get(k, k): v for k, v in option.items()}
