"""The inbound webhook, checked and turned into what the hub stores.

Input is the JSON form of the public InBoundWrapper (as ``MessageToDict`` gives
it); provider adapters feed the same records through ``from_provider``. What one
message carries (body, reader text, details) is read in ``inbound_content``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.domain.addresses import AddressError, has_letters, normalize_email, normalize_msisdn
from server.domain.coerce import integer, loose
from server.domain.consent import InboundKeyword
from server.domain.contacts import ContactInfo, contact_info
from server.domain.errors import FieldViolation, invalid
from server.domain.events import EventType, NewEvent
from server.domain.inbound_content import (
    MEDIA_KINDS,
    compact,
    field_text,
    infer_type,
    message_content,
)
from server.domain.models import Session
from server.domain.provider import InboundMessage
from server.domain.status import DeliveryStatus

PHONE_TYPES = frozenset({"SMS", "WHATSAPP", "RCS"})
EMAIL_TYPES = frozenset({"EMAIL"})


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
    sender, contact_ref = field_text(doc, "from"), field_text(doc, "contactId")
    if not sender and not contact_ref:
        problems.append(FieldViolation(f"{path}.from", "required: the sender's address"))
    contact = _contact_for(contact_ref, sender, contacts)
    if contact is None:
        problems.append(
            FieldViolation(
                f"{path}.contactId", "matches no entry of contacts[], which names the channel"
            )
        )
    external_id = field_text(doc, "messageIdExt") or field_text(doc, "id")
    if not external_id:
        problems.append(
            FieldViolation(f"{path}.id", "required: id or messageIdExt, so a repeat is ignored")
        )
    kind = field_text(doc, "type").lower() or infer_type(doc)
    content = message_content(kind, doc, path, problems)
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


def _status(
    doc: Mapping[str, Any], path: str, problems: list[FieldViolation]
) -> StatusReport | None:
    code = field_text(doc, "status").upper()
    status = STATUS_CODES.get(code)
    if status is None:
        expected = ", ".join(STATUS_CODES)
        problems.append(FieldViolation(f"{path}.status", f"expected one of {expected}"))
    message_id, external_id = field_text(doc, "id"), field_text(doc, "messageIdExt")
    if not (message_id or external_id):
        problems.append(FieldViolation(f"{path}.id", "required: id or messageIdExt"))
    if status is None or not (message_id or external_id):
        return None
    errors = [
        ": ".join(p for p in (field_text(e, "code"), field_text(e, "title")) if p)
        for e in _list(doc, "errors")
    ]
    if code == "DELTD":
        errors.insert(0, "DELETED")
    return StatusReport(message_id, external_id, status, "; ".join(e for e in errors if e))


def _signal(doc: Mapping[str, Any]) -> ChatSignal | None:
    code = field_text(doc, "eventCode").upper()
    if code in CHAT_STATES:
        kind, value = EventType.CHAT_STATE, CHAT_STATES[code]
    elif code in ACCEPT_STATUSES:
        kind, value = EventType.ACCEPT_STATUS, code
    else:
        return None
    contact_id = field_text(doc, "contactId") or field_text(doc.get("contact"), "contactId")
    # OUTBOUND events come from the business side: an agent typing or reading.
    if field_text(doc, "type").upper() == "OUTBOUND":
        route, session = doc.get("route"), doc.get("session")
        agent = field_text(route, "senderCode") or field_text(session, "agent") or "agent"
        originator, role = agent, "AGENT"
    else:
        # Empty when only the session is named: its contact is the originator.
        originator, role = contact_id, "CONSUMER"
    return ChatSignal(
        type=kind,
        value=value,
        session_id=field_text(doc, "sessionId"),
        contact_id=contact_id,
        message_id=field_text(doc, "messageId"),
        originator_id=originator,
        originator_role=role,
    )


def from_provider(channel_id: str, contact_type: str, m: InboundMessage) -> ReceivedMessage:
    """A provider adapter's inbound message, on the same path as the webhook's."""
    address = customer_address(m.from_address, contact_type)
    details = compact(
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
    if m.type in MEDIA_KINDS and m.media_url:
        attachment = compact({"mediaUrl": m.media_url, "mimeType": m.mime_type})
        body = {
            "media": {"kind": MEDIA_KINDS[m.type], "caption": m.caption, "attachment": attachment}
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


def content_event(
    m: ReceivedMessage,
    message_id: str,
    s: Session,
    cim: dict[str, Any],
    consent: Mapping[str, Any] | None = None,
) -> NewEvent:
    """The event a stored customer message is reported by, in the session it joined.

    consent: what the message's keyword did to the sender's consent, if anything.
    """
    data: dict[str, Any] = {
        **m.details,
        "type": m.type,
        "from": m.address,
        "contactId": m.contact_id,
        "contactName": m.contact_name,
        "providerMessageId": m.external_id,
        "sessionId": s.id,
        # The route at arrival: where this message goes.
        "route": {"queue": s.queue, "agent": s.agent, "team": s.team, "routingId": s.routing_id},
        "cimMessage": cim,
    }
    if m.lane:
        data["to"] = m.lane
    if consent:
        data["consent"] = dict(consent)
    return NewEvent(
        conversation_id=s.conversation_id,
        type=EventType.CONTENT,
        originator_id=m.address,
        originator_role="CONSUMER",
        message=m.text,
        content_type=m.content_type,
        message_id=message_id,
        channel_id=m.channel_id,
        customer_id=m.address,
        data={k: v for k, v in data.items() if v not in ("", None)},
    )


def signal_event(s: ChatSignal, session: Session) -> NewEvent:
    """A ChatStateEvent or AcceptStatusEvent, in the conversation of the session it names."""
    key = "chatState" if s.type is EventType.CHAT_STATE else "acceptStatus"
    return NewEvent(
        conversation_id=session.conversation_id,
        type=s.type,
        originator_id=s.originator_id or session.contact_id,
        originator_role=s.originator_role,
        message=s.value,
        message_id=s.message_id,
        status=s.value,
        channel_id=session.channel_id,
        customer_id=session.address or session.contact_id,
        data={key: s.value, "sessionId": session.id},
    )
