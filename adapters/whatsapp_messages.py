"""Cloud API request bodies: text, media, location, contacts, reply buttons, templates."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from adapters.base import Delivery, PermanentProviderError
from server.domain.coerce import as_text
from server.domain.content import Button, ContactCard, Location, Media, Template

# Interactive reply buttons: Meta allows three, titles of 20 characters, ids of 256.
MAX_REPLY_BUTTONS = 3
BUTTON_TITLE_MAX = 20
BUTTON_ID_MAX = 256

_OUTBOUND_MEDIA = frozenset({"image", "video", "audio", "voice", "document"})
_CAPTIONED = frozenset({"image", "video", "document"})  # Meta's audio object has no caption
_URL = re.compile(r"https?://", re.IGNORECASE)
_BIRTHDAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def message_body(delivery: Delivery) -> dict[str, Any]:
    """The Cloud API request body for one delivery; content errors are permanent."""
    content = delivery.content
    kind = content.type
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": wa_recipient(delivery.destination),
    }
    if kind == "text":
        text = content.text or delivery.text
        if not text:
            raise _invalid("a text message needs a body")
        if content.buttons:
            body.update(type="interactive", interactive=reply_buttons(text, content.buttons))
        else:
            body.update(type="text", text={"preview_url": bool(_URL.search(text)), "body": text})
    elif kind in _OUTBOUND_MEDIA:
        wa_type = "audio" if kind == "voice" else kind
        body.update(type=wa_type, **{wa_type: media_object(wa_type, content.media)})
    elif kind == "location":
        body.update(type="location", location=location_object(content.location))
    elif kind == "contacts":
        if not content.contacts:
            raise _invalid("a contacts message needs at least one contact card")
        body.update(type="contacts", contacts=[contact_card(c) for c in content.contacts])
    elif kind == "template":
        body.update(type="template", template=template_object(content.template))
    else:
        raise PermanentProviderError(
            f"WhatsApp Cloud API adapter cannot send {kind!r} content", "UNSUPPORTED_TYPE"
        )
    return body


def wa_recipient(destination: str) -> str:
    """E.164 (+16505551234) to the digits-only form the Cloud API documents (16505551234)."""
    digits = re.sub(r"\D", "", destination)
    if not digits:
        raise PermanentProviderError(
            f"destination {destination!r} is not a phone number", "INVALID_DESTINATION"
        )
    return digits


def media_object(wa_type: str, media: Media | None) -> dict[str, str]:
    if media is None or not media.url:
        raise _invalid(f"a {wa_type} message needs a media URL")
    out = {"link": media.url}
    if media.caption and wa_type in _CAPTIONED:
        out["caption"] = media.caption
    if media.filename and wa_type == "document":
        out["filename"] = media.filename
    return out


def location_object(where: Location | None) -> dict[str, Any]:
    if where is None or where.latitude is None or where.longitude is None:
        raise _invalid("a location message needs latitude and longitude")
    location: dict[str, Any] = {"latitude": where.latitude, "longitude": where.longitude}
    # Meta's location object has name and address but no url, so url is not sent.
    if where.name:
        location["name"] = where.name
    if where.address:
        location["address"] = where.address
    return location


def contact_card(card: ContactCard) -> dict[str, Any]:
    """A seed-002 contact card as a Cloud API contact object.

    The card's fields are Meta's; empty ones are dropped, and a birthday that
    is not YYYY-MM-DD is left out rather than having Meta refuse the whole
    message.
    """
    name = _present(card.name)
    if "formatted_name" not in name:
        joined = " ".join(name[k] for k in ("first_name", "last_name") if k in name)
        if joined:
            name["formatted_name"] = joined
    if "formatted_name" not in name:
        raise _invalid("a contact card needs name.formatted_name or a first or last name")
    out: dict[str, Any] = {"name": name}
    if _BIRTHDAY.fullmatch(card.birthday):
        out["birthday"] = card.birthday
    if org := _present(card.org):
        out["org"] = org
    lists: dict[str, tuple[Any, ...]] = {
        "addresses": card.addresses,
        "emails": card.emails,
        "phones": card.phones,
        "urls": card.urls,
    }
    for part, given in lists.items():
        # An entry holding only its type ("WORK") says nothing; drop it.
        entries = [e for e in map(_present, given) if set(e) - {"type"}]
        if entries:
            out[part] = entries
    return out


def reply_buttons(text: str, buttons: Sequence[Button]) -> dict[str, Any]:
    """An interactive reply-buttons object from seed-002 options.buttons."""
    if len(buttons) > MAX_REPLY_BUTTONS:
        raise _invalid(
            f"WhatsApp shows at most {MAX_REPLY_BUTTONS} reply buttons, got {len(buttons)}"
        )
    replies = []
    for button in buttons:
        title = button.title or button.id
        button_id = button.id or title
        if not title:
            raise _invalid("a button needs a title or an id")
        # Over-long labels are cut rather than having Meta refuse the message.
        reply = {"id": button_id[:BUTTON_ID_MAX], "title": title[:BUTTON_TITLE_MAX]}
        replies.append({"type": "reply", "reply": reply})
    return {"type": "button", "body": {"text": text}, "action": {"buttons": replies}}


def template_object(template: Template | None) -> dict[str, Any]:
    # Meta template names are lowercase only, so FEEDBACK here can only be feedback there.
    name = template.code.strip().lower() if template is not None else ""
    if template is None or not name:
        raise _invalid("a template message needs the template's code")
    out: dict[str, Any] = {"name": name, "language": {"code": template.language or "en_US"}}
    if parameters := template_parameters(template.data):
        out["components"] = [{"type": "body", "parameters": parameters}]
    return out


def template_parameters(data: Any) -> list[dict[str, Any]]:
    """Body parameters: data.parameters if given, else data's values in key order."""
    if not isinstance(data, Mapping):
        return []
    given = data.get("parameters")
    values = given if isinstance(given, list) else list(data.values())
    parameters = []
    for value in values:
        if isinstance(value, Mapping) and value.get("type"):
            parameters.append(dict(value))  # already a Cloud API parameter object
        else:
            parameters.append({"type": "text", "text": _param_text(value)})
    return parameters


def _invalid(reason: str) -> PermanentProviderError:
    return PermanentProviderError(reason, "INVALID_CONTENT")


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        return json.dumps(value, ensure_ascii=False)
    return as_text(value)


def _present(part: Any) -> dict[str, str]:
    """A contact part's non-empty fields, under Meta's names, which are the card's."""
    return {k: v for k, v in asdict(part).items() if v}
