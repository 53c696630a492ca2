"""What a message carries to its provider, as typed values.

The send API stores a message's content as JSON, in the shape the request
gave it (camelCase keys and seed-002 names; see `sending.canonical_content`
for single sends and `batch.plan_batch` for batches). `parse_content` reads
that JSON once, where a claimed message becomes a Delivery, and adapters read
these fields, never keys.

The parse never fails. Content was checked when it was accepted and came
through typed protos, so a part of the wrong shape can only be content stored
long ago or written by hand: it counts as absent, keeping its place in a
list, and the adapter refuses what its provider cannot send
(INVALID_CONTENT), as it does for a part that is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from server.domain.coerce import as_text, flag, integer, items, loose, mapping, number

_Flat = TypeVar(
    "_Flat",
    "ContactName",
    "ContactOrg",
    "ContactAddress",
    "ContactEmail",
    "ContactPhone",
    "ContactUrl",
    "Button",
)


@dataclass(frozen=True, slots=True)
class Media:
    url: str = ""
    caption: str = ""
    filename: str = ""
    thumbnail_url: str = ""


@dataclass(frozen=True, slots=True)
class Location:
    latitude: float | None = None
    longitude: float | None = None
    name: str = ""
    address: str = ""
    url: str = ""


@dataclass(frozen=True, slots=True)
class ContactName:
    formatted_name: str = ""
    first_name: str = ""
    last_name: str = ""
    middle_name: str = ""
    suffix: str = ""
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class ContactOrg:
    company: str = ""
    department: str = ""
    title: str = ""


@dataclass(frozen=True, slots=True)
class ContactAddress:
    street: str = ""
    city: str = ""
    state: str = ""
    zip: str = ""
    country: str = ""
    country_code: str = ""
    type: str = ""


@dataclass(frozen=True, slots=True)
class ContactEmail:
    email: str = ""
    type: str = ""


@dataclass(frozen=True, slots=True)
class ContactPhone:
    phone: str = ""
    type: str = ""
    wa_id: str = ""


@dataclass(frozen=True, slots=True)
class ContactUrl:
    url: str = ""
    type: str = ""


@dataclass(frozen=True, slots=True)
class ContactCard:
    name: ContactName = ContactName()
    birthday: str = ""
    org: ContactOrg = ContactOrg()
    addresses: tuple[ContactAddress, ...] = ()
    emails: tuple[ContactEmail, ...] = ()
    phones: tuple[ContactPhone, ...] = ()
    urls: tuple[ContactUrl, ...] = ()


@dataclass(frozen=True, slots=True)
class Template:
    code: str = ""
    id: str = ""
    language: str = ""
    # The caller's values for the template's placeholders, as given.
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Button:
    id: str = ""
    title: str = ""
    type: str = ""
    url: str = ""
    phone: str = ""


@dataclass(frozen=True, slots=True)
class Suggestion:
    """An RCS suggested reply or action; which fields count depends on its type."""

    type: str = "reply"  # reply, viewLocation, shareLocation, openUrl, calendarEvent, dialPhone
    display_text: str = ""
    postback_data: str = ""
    fallback_url: str = ""
    url: str = ""
    phone: str = ""
    label: str = ""
    address: str = ""
    latitude: float | None = None
    longitude: float | None = None
    start_time: str = ""
    end_time: str = ""
    meeting_title: str = ""
    meeting_description: str = ""


@dataclass(frozen=True, slots=True)
class CardMedia:
    url: str = ""
    thumbnail_url: str = ""
    height: str = ""  # SHORT, MEDIUM or TALL


@dataclass(frozen=True, slots=True)
class RichCard:
    title: str = ""
    description: str = ""
    orientation: str = ""  # VERTICAL or HORIZONTAL
    thumbnail_alignment: str = ""  # LEFT or RIGHT
    media: CardMedia | None = None
    suggestions: tuple[Suggestion, ...] = ()


@dataclass(frozen=True, slots=True)
class Attachment:
    url: str = ""
    name: str = ""
    mime_type: str = ""
    size: int = 0  # as declared by the sender; 0 when not


@dataclass(frozen=True, slots=True)
class SendOptions:
    sms_fallback: bool = False  # RCS: fall back to SMS when the user is not RCS-capable
    fallback_text: str = ""  # the SMS text, when not the message's own
    sms_sender_id: str = ""
    from_name: str = ""  # email: the display name beside the from address


@dataclass(frozen=True, slots=True)
class MessageContent:
    type: str = "text"
    # The content's own text; adapters that send a body fall back to the message's text.
    text: str = ""
    sender: str = ""  # a from address the send named, else the channel's lane
    category: str = ""  # consent scope, e.g. transactional or marketing
    options: SendOptions = SendOptions()
    # WhatsApp and single sends
    media: Media | None = None
    location: Location | None = None
    contacts: tuple[ContactCard, ...] = ()
    template: Template | None = None
    buttons: tuple[Button, ...] = ()
    # RCS
    rich_card: RichCard | None = None
    cards: tuple[RichCard, ...] = ()
    card_width: str = ""  # SMALL or MEDIUM
    suggestions: tuple[Suggestion, ...] = ()
    event: str = ""  # IS_TYPING or READ, for an agentEvent
    event_message_id: str = ""  # the message a READ event refers to
    # Email
    subject: str = ""
    html: str = ""
    reply_to: str = ""
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    list_unsubscribe: str = ""


# Content made of these keys alone (a text send's) leaves every other field at
# its default. Each dispatched message is read once more when it is claimed,
# and reading the thirty fields one by one cost several times the rest.
_PLAIN_KEYS = frozenset({"type", "text", "from", "category", "options"})
_NO_OPTIONS = SendOptions()


def parse_content(stored: Any, *, message_type: str = "") -> MessageContent:
    """The typed content of stored JSON; message_type is for content that names none."""
    c = mapping(stored)
    options = c.get("options")
    plain: dict[str, Any] = {
        "type": as_text(c.get("type")) or message_type or "text",
        "text": as_text(c.get("text")),
        "sender": as_text(c.get("from")),
        "category": as_text(c.get("category")),
        "options": _options(options) if options else _NO_OPTIONS,
    }
    if c.keys() <= _PLAIN_KEYS:
        return MessageContent(**plain)
    media_url = as_text(c.get("mediaUrl")) or as_text(c.get("mediaContentUrl"))
    has_location = c.get("latitude") is not None or c.get("longitude") is not None
    template = c.get("template")
    return MessageContent(
        **plain,
        media=Media(
            url=media_url,
            caption=as_text(c.get("caption")),
            filename=as_text(c.get("filename")),
            thumbnail_url=as_text(c.get("thumbnailUrl")),
        )
        if media_url
        else None,
        location=Location(
            latitude=_number(c.get("latitude")),
            longitude=_number(c.get("longitude")),
            name=as_text(c.get("name")),
            address=as_text(c.get("address")),
            url=as_text(c.get("url")),
        )
        if has_location
        else None,
        contacts=tuple(_contact(card) for card in items(c.get("contacts"))),
        template=_template(template) if isinstance(template, Mapping) else None,
        buttons=tuple(_pick(Button, b) for b in items(c.get("buttons"))),
        rich_card=_card(c["richCard"]) if isinstance(c.get("richCard"), Mapping) else None,
        cards=tuple(_card(card) for card in items(c.get("cards"))),
        card_width=as_text(c.get("width")),
        suggestions=_suggestions(c.get("suggestions")),
        event=as_text(c.get("event")),
        event_message_id=as_text(c.get("messageId")),
        subject=as_text(c.get("subject")),
        html=as_text(c.get("html")),
        reply_to=as_text(c.get("replyTo")),
        cc=_texts(c.get("cc")),
        bcc=_texts(c.get("bcc")),
        attachments=tuple(_attachment(a) for a in items(c.get("attachments"))),
        list_unsubscribe=as_text(c.get("listUnsubscribe")),
    )


def _number(value: Any) -> float | None:
    return loose(number, value, None)


def _texts(value: Any) -> tuple[str, ...]:
    # One address given bare is still that address, not none.
    return (value,) if isinstance(value, str) else tuple(as_text(v) for v in items(value))


def _options(value: Any) -> SendOptions:
    o = mapping(value)
    return SendOptions(
        sms_fallback=loose(flag, o.get("smsFallback"), False),
        fallback_text=as_text(o.get("text")),
        sms_sender_id=as_text(o.get("smsSenderId")),
        from_name=as_text(o.get("fromName")),
    )


def _pick(cls: type[_Flat], value: Any) -> _Flat:
    """A flat dataclass of strings from an object with the same field names; values
    become text and are trimmed (a zip that arrived as 94025.0 is "94025")."""
    source = mapping(value)
    return cls(**{f.name: as_text(source.get(f.name)).strip() for f in fields(cls)})


def _contact(value: Any) -> ContactCard:
    card = mapping(value)
    return ContactCard(
        name=_pick(ContactName, card.get("name")),
        birthday=as_text(card.get("birthday")),
        org=_pick(ContactOrg, card.get("org")),
        addresses=tuple(_pick(ContactAddress, a) for a in items(card.get("addresses"))),
        emails=tuple(_pick(ContactEmail, e) for e in items(card.get("emails"))),
        phones=tuple(_pick(ContactPhone, p) for p in items(card.get("phones"))),
        urls=tuple(_pick(ContactUrl, u) for u in items(card.get("urls"))),
    )


def _template(t: Mapping[str, Any]) -> Template:
    return Template(
        code=as_text(t.get("code")) or as_text(t.get("name")),
        id=as_text(t.get("id")),
        language=as_text(t.get("lang")) or as_text(t.get("language")),
        data=mapping(t.get("data")),
    )


def _suggestions(value: Any) -> tuple[Suggestion, ...]:
    return tuple(_suggestion(s) for s in items(value))


def _suggestion(value: Any) -> Suggestion:
    s = mapping(value)
    return Suggestion(
        type=as_text(s.get("type")) or "reply",
        display_text=as_text(s.get("displayText")),
        postback_data=as_text(s.get("postbackData")),
        fallback_url=as_text(s.get("fallbackUrl")),
        url=as_text(s.get("url")),
        phone=as_text(s.get("phone")),
        label=as_text(s.get("label")),
        address=as_text(s.get("address")),
        latitude=_number(s.get("latitude")),
        longitude=_number(s.get("longitude")),
        start_time=as_text(s.get("startTime")),
        end_time=as_text(s.get("endTime")),
        meeting_title=as_text(s.get("meetingTitle")),
        meeting_description=as_text(s.get("meetingDescription")),
    )


def _card(value: Any) -> RichCard:
    card = mapping(value)
    media = card.get("media")
    return RichCard(
        title=as_text(card.get("title")),
        description=as_text(card.get("description")),
        orientation=as_text(card.get("orientation")),
        thumbnail_alignment=as_text(card.get("thumbnailAlignment")),
        media=CardMedia(
            url=as_text(media.get("url")),
            thumbnail_url=as_text(media.get("thumbnailUrl")),
            height=as_text(media.get("height")),
        )
        if isinstance(media, Mapping)
        else None,
        suggestions=_suggestions(card.get("suggestions")),
    )


def _attachment(value: Any) -> Attachment:
    a = mapping(value)
    return Attachment(
        url=as_text(a.get("mediaUrl")),
        name=as_text(a.get("name")),
        mime_type=as_text(a.get("mimeType")),
        size=max(0, loose(integer, a.get("size"), 0)),
    )
