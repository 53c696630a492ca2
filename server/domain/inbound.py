"""The inbound webhook, checked and turned into what the hub stores.

Input is the JSON form of the public InBoundWrapper (as ``MessageToDict`` gives
it); provider adapters feed the same records through ``from_provider``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.domain.addresses import AddressError, has_letters, normalize_email, normalize_msisdn
from server.domain.coerce import integer, loose, number
from server.domain.consent import InboundKeyword
from server.domain.contacts import ContactInfo, contact_info
from server.domain.errors import FieldViolation, invalid
from server.domain.events import EventType
from server.domain.provider import InboundMessage
from server.domain.status import DeliveryStatus

PHONE_TYPES = frozenset({"SMS", "WHATSAPP", "RCS"})
EMAIL_TYPES = frozenset({"EMAIL"})

_MEDIA_KINDS = {
    "image": "MEDIA_KIND_IMAGE",
    "video": "MEDIA_KIND_VIDEO",
    "audio": "MEDIA_KIND_AUDIO",
    "voice": "MEDIA_KIND_AUDIO",
    "document": "MEDIA_KIND_FILE",
    "sticker": "MEDIA_KIND_STICKER",
}
_OTHER_TYPES = ("text", "location", "system", "form", "referral")
MESSAGE_TYPES = tuple(sorted({*_MEDIA_KINDS, *_OTHER_TYPES}))

# The public status short codes. SENT is the provider's acceptance. DELTD (the
# recipient deleted the message) proves it was delivered, and a delivery status
# never moves back, so it counts as DELIVERED with the reason DELETED.
STATUS_CODES = {
    "SENT": DeliveryStatus.SUBMITTED,
    "DLVRD": DeliveryStatus.DELIVERED,
    "READ": DeliveryStatus.READ,
    "FAILD": DeliveryStatus.FAILED,
    "DELTD": DeliveryStatus.DELIVERED,
}

# Event codes that become ChatStateEvents (TYPING is a common synonym) and
# AcceptStatusEvents. Session codes are not applied: the hub owns session state.
CHAT_STATES = {
    "COMPOSING": "COMPOSING",
    "TYPING": "COMPOSING",
    "ACTIVE": "ACTIVE",
    "PAUSED": "PAUSED",
    "INACTIVE": "INACTIVE",
    "GONE": "GONE",
}
ACCEPT_STATUSES = frozenset({"ACCEPT", "READ"})


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One customer message, whichever way it arrived."""

    channel_id: str
    contact_id: str
    # The customer's address on the channel, normalised like outbound
    # destinations so both directions land in one conversation.
    address: str
    # The channel's id for the message: a repeat with the same id is ignored.
    external_id: str
    type: str
    # What a reader sees: the text, a caption, a button title or a place name.
    text: str
    content_type: str
    # The CIM MessageBody, in its JSON form.
    body: Mapping[str, Any]
    # Flat facts for event consumers: mediaUrl, mimeType, caption, latitude, ...
    details: Mapping[str, Any] = field(default_factory=dict)
    timestamp: int = 0
    contact_name: str = ""
    lane: str = ""
    # Set when the whole text is a consent keyword: the ledger changes with it.
    keyword: InboundKeyword | None = None


@dataclass(frozen=True, slots=True)
class StatusReport:
    """A report on an outbound message: ``message_id`` is the hub's id (the
    public ``id``), ``external_id`` the provider's (``messageIdExt``)."""

    message_id: str
    external_id: str
    status: DeliveryStatus
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ChatSignal:
    """A typing indicator or an accept/read, from the customer or an agent."""

    type: EventType
    value: str
    session_id: str
    contact_id: str
    message_id: str
    originator_id: str
    originator_role: str


@dataclass(frozen=True, slots=True)
class InboundBatch:
    contacts: tuple[ContactInfo, ...] = ()
    messages: tuple[ReceivedMessage, ...] = ()
    statuses: tuple[StatusReport, ...] = ()
    signals: tuple[ChatSignal, ...] = ()
    ignored_events: int = 0


def plan_inbound(doc: Mapping[str, Any], channel_types: Mapping[str, str]) -> InboundBatch:
    """Check a whole payload; any problem rejects all of it, so nothing is half-stored."""
    problems: list[FieldViolation] = []
    contacts = tuple(
        contact_info(c, f"contacts[{i}]", problems) for i, c in enumerate(_list(doc, "contacts"))
    )
    messages = [
        _message(m, f"messages[{i}]", contacts, channel_types, problems)
        for i, m in enumerate(_list(doc, "messages"))
    ]
    statuses = [
        _status(s, f"statuses[{i}]", problems) for i, s in enumerate(_list(doc, "statuses"))
    ]
    events = _list(doc, "events")
    signals = [s for s in (_signal(e) for e in events) if s is not None]
    if problems:
        raise invalid(problems)
    return InboundBatch(
        contacts=contacts,
        messages=tuple(m for m in messages if m is not None),
        statuses=tuple(s for s in statuses if s is not None),
        signals=tuple(signals),
        ignored_events=len(events) - len(signals),
    )


def _list(doc: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = doc.get(key) or []
    return [v for v in value if isinstance(v, Mapping)]


def _text(doc: Mapping[str, Any] | None, key: str) -> str:
    if not isinstance(doc, Mapping):
        return ""
    value = doc.get(key)
    return "" if value is None else str(value)


def _digits(value: str) -> str:
    return value.lstrip("+")


def _contact_for(
    contact_ref: str, sender: str, contacts: Sequence[ContactInfo]
) -> ContactInfo | None:
    """The contacts[] entry a message belongs to: by contact id, then by phone,
    then the only entry there is."""
    for c in contacts:
        if contact_ref and c.contact_id == contact_ref:
            return c
    if sender:
        for c in contacts:
            phones = (c.profile.get("phone", ""), c.business_profile.get("phone", ""))
            if _digits(sender) in {_digits(p) for p in phones if p}:
                return c
    return contacts[0] if len(contacts) == 1 else None


def customer_address(raw: str, contact_type: str) -> str:
    """The address outbound sends would use, so replies share the conversation."""
    kind = contact_type.upper()
    try:
        if kind in PHONE_TYPES:
            return normalize_msisdn(raw)
        if kind in EMAIL_TYPES:
            return normalize_email(raw)
    except AddressError:
        pass  # keep what the channel sent; it is still a stable key
    return raw


def _message(
    doc: Mapping[str, Any],
    path: str,
    contacts: Sequence[ContactInfo],
    channel_types: Mapping[str, str],
    problems: list[FieldViolation],
) -> ReceivedMessage | None:
    before = len(problems)
    sender, contact_ref = _text(doc, "from"), _text(doc, "contactId")
    if not sender and not contact_ref:
        problems.append(FieldViolation(f"{path}.from", "required: the sender's address"))
    contact = _contact_for(contact_ref, sender, contacts)
    if contact is None:
        problems.append(
            FieldViolation(
                f"{path}.contactId", "matches no entry of contacts[], which names the channel"
            )
        )
    external_id = _text(doc, "messageIdExt") or _text(doc, "id")
    if not external_id:
        problems.append(
            FieldViolation(f"{path}.id", "required: id or messageIdExt, so a repeat is ignored")
        )
    kind = _text(doc, "type").lower() or _infer_type(doc)
    content = _content(kind, doc, path, problems)
    if contact is not None and has_letters(sender):
        # Read as keypad digits, the sender would land in someone else's conversation.
        sender_type = contact.contact_type or channel_types.get(contact.channel_id, "")
        if sender_type.upper() in PHONE_TYPES:
            problems.append(
                FieldViolation(f"{path}.from", "letters are not allowed in a phone number")
            )
    if len(problems) > before or contact is None or content is None:
        return None
    body, text, content_type, details = content
    contact_type = contact.contact_type or channel_types.get(contact.channel_id, "")
    raw_address = sender or contact.profile.get("phone", "") or contact.contact_id
    return ReceivedMessage(
        channel_id=contact.channel_id,
        contact_id=contact.contact_id,
        address=customer_address(raw_address, contact_type),
        external_id=external_id,
        type=kind,
        text=text,
        content_type=content_type,
        body=body,
        details=details,
        timestamp=loose(integer, doc.get("timestamp"), 0),
        contact_name=contact.profile.get("name", "") or contact.business_profile.get("name", ""),
        lane=contact.lane,
    )


def _infer_type(doc: Mapping[str, Any]) -> str:
    for kind in ("text", *_MEDIA_KINDS, "location", "form", "referral"):
        if doc.get(kind):
            return kind
    return ""


_Content = tuple[dict[str, Any], str, str, dict[str, Any]]


def _content(
    kind: str, doc: Mapping[str, Any], path: str, problems: list[FieldViolation]
) -> _Content | None:
    """(CIM body, reader text, content type, flat details) for one message."""
    extras: dict[str, Any] = {}
    for key in ("form", "referral"):
        if isinstance(doc.get(key), Mapping) and doc[key]:
            extras[key] = dict(doc[key])
    if kind in _MEDIA_KINDS:
        return _media(kind, doc.get(kind), path, problems, extras)
    if kind == "text":
        text = _text(doc.get("text"), "body")
        if not text:
            problems.append(FieldViolation(f"{path}.text.body", "required for type text"))
            return None
        return {"plain": {"markdownText": text}}, text, "text/plain", extras
    if kind == "location":
        return _location(doc.get("location"), path, problems, extras)
    if kind == "form":
        form = doc.get("form")
        title = _text(form, "reply_title") or _text(form, "reply_id")
        if not title:
            problems.append(FieldViolation(f"{path}.form.reply_id", "required for type form"))
            return None
        return {"plain": {"markdownText": title}}, title, "text/plain", extras
    if kind == "referral":
        ref = doc.get("referral")
        if not isinstance(ref, Mapping) or not ref:
            problems.append(FieldViolation(f"{path}.referral", "required for type referral"))
            return None
        url = {
            "url": _text(ref, "sourceUrl"),
            "title": _text(ref, "title"),
            "description": _text(ref, "body"),
        }
        return {"url": url}, _text(ref, "body") or _text(ref, "title"), "text/plain", extras
    if kind == "system":
        text = _text(doc.get("text"), "body")
        return {"plain": {"markdownText": text}}, text, "text/plain", extras
    expected = ", ".join(MESSAGE_TYPES)
    problems.append(FieldViolation(f"{path}.type", f"unknown type {kind!r}; expected {expected}"))
    return None


def _media(
    kind: str, part: Any, path: str, problems: list[FieldViolation], extras: dict[str, Any]
) -> _Content | None:
    url = _text(part, "linkSecure") or _text(part, "link")
    if not (url or _text(part, "id")):
        problems.append(
            FieldViolation(f"{path}.{kind}", f"required for type {kind}: link, linkSecure or id")
        )
        return None
    mime, caption = _text(part, "mime_type"), _text(part, "caption")
    attachment = {"mediaUrl": url, "mimeType": mime, "fileName": _text(part, "filename")}
    body = {
        "media": {
            "kind": _MEDIA_KINDS[kind],
            "caption": caption,
            "attachment": {k: v for k, v in attachment.items() if v},
        }
    }
    details = {**extras, "mediaUrl": url, "mimeType": mime, "caption": caption}
    return body, caption, mime or "application/octet-stream", _compact(details)


def _location(
    loc: Any, path: str, problems: list[FieldViolation], extras: dict[str, Any]
) -> _Content | None:
    lat = loose(number, loc.get("latitude"), None) if isinstance(loc, Mapping) else None
    lon = loose(number, loc.get("longitude"), None) if isinstance(loc, Mapping) else None
    if lat is None or lon is None:
        problems.append(
            FieldViolation(f"{path}.location", "latitude and longitude are required numbers")
        )
        return None
    place = {k: _text(loc, k) for k in ("name", "address", "url")}
    body = {"location": {"latitude": lat, "longitude": lon, **_compact(place)}}
    details = {**extras, "latitude": lat, "longitude": lon}
    return body, place["name"] or place["address"], "text/plain", details


def _compact(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in ("", None)}


def _status(
    doc: Mapping[str, Any], path: str, problems: list[FieldViolation]
) -> StatusReport | None:
    code = _text(doc, "status").upper()
    status = STATUS_CODES.get(code)
    if status is None:
        expected = ", ".join(STATUS_CODES)
        problems.append(FieldViolation(f"{path}.status", f"expected one of {expected}"))
    message_id, external_id = _text(doc, "id"), _text(doc, "messageIdExt")
    if not (message_id or external_id):
        problems.append(FieldViolation(f"{path}.id", "required: id or messageIdExt"))
    if status is None or not (message_id or external_id):
        return None
    errors = [
        ": ".join(p for p in (_text(e, "code"), _text(e, "title")) if p)
        for e in _list(doc, "errors")
    ]
    if code == "DELTD":
        errors.insert(0, "DELETED")
    return StatusReport(message_id, external_id, status, "; ".join(e for e in errors if e))


def _signal(doc: Mapping[str, Any]) -> ChatSignal | None:
    code = _text(doc, "eventCode").upper()
    if code in CHAT_STATES:
        kind, value = EventType.CHAT_STATE, CHAT_STATES[code]
    elif code in ACCEPT_STATUSES:
        kind, value = EventType.ACCEPT_STATUS, code
    else:
        return None
    contact_id = _text(doc, "contactId") or _text(doc.get("contact"), "contactId")
    # OUTBOUND events come from the business side: an agent typing or reading.
    if _text(doc, "type").upper() == "OUTBOUND":
        route, session = doc.get("route"), doc.get("session")
        agent = _text(route, "senderCode") or _text(session, "agent") or "agent"
        originator, role = agent, "AGENT"
    else:
        # Empty when only the session is named: its contact is the originator.
        originator, role = contact_id, "CONSUMER"
    return ChatSignal(
        type=kind,
        value=value,
        session_id=_text(doc, "sessionId"),
        contact_id=contact_id,
        message_id=_text(doc, "messageId"),
        originator_id=originator,
        originator_role=role,
    )


def from_provider(channel_id: str, contact_type: str, m: InboundMessage) -> ReceivedMessage:
    """A provider adapter's inbound message, on the same path as the webhook's."""
    address = customer_address(m.from_address, contact_type)
    details = _compact(
        {
            "to": m.to_address,
            "mediaUrl": m.media_url,
            "mimeType": m.mime_type,
            "caption": m.caption,
            "latitude": m.latitude,
            "longitude": m.longitude,
        }
    )
    body: dict[str, Any]
    if m.type in _MEDIA_KINDS and m.media_url:
        attachment = _compact({"mediaUrl": m.media_url, "mimeType": m.mime_type})
        body = {
            "media": {"kind": _MEDIA_KINDS[m.type], "caption": m.caption, "attachment": attachment}
        }
    elif m.type == "location" and m.latitude is not None and m.longitude is not None:
        body = {"location": {"latitude": m.latitude, "longitude": m.longitude}}
    else:
        body = {"plain": {"markdownText": m.text or m.caption}}
    return ReceivedMessage(
        channel_id=channel_id,
        contact_id=address,
        address=address,
        external_id=m.provider_message_id,
        type=m.type,
        text=m.text or m.caption,
        content_type=m.mime_type or "text/plain",
        body=body,
        details=details,
        timestamp=m.timestamp,
        contact_name=m.contact_name,
        lane=m.to_address,
    )
