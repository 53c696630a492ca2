"""Turning a single-destination send request into a validated draft."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.domain.addresses import AddressError, normalize_email, normalize_msisdn
from server.domain.coerce import loose, number
from server.domain.errors import FieldViolation, invalid
from server.domain.limits import (
    SINGLE_TEXT_MAX,
    body_limit,
    body_problem,
    max_chars,
    past_body_limit,
)
from server.domain.models import Channel, OutboundDraft, conversation_for
from server.domain.substitution import TooLong, render_text

PHONE_CHANNELS = frozenset({"SMS", "WHATSAPP", "RCS"})
EMAIL_CHANNELS = frozenset({"EMAIL"})

# Which content part each message type needs, and the field inside it that must be set.
_REQUIRED_PART = {
    "text": ("text", "body"),
    "image": ("image", "link"),
    "video": ("video", "link"),
    "audio": ("audio", "link"),
    "voice": ("audio", "link"),
    "document": ("document", "link"),
    "location": ("location", None),
    "contacts": ("contacts", None),
    "template": ("template", None),
}


@dataclass(frozen=True, slots=True)
class SingleSend:
    """A single-destination send, in the public API's terms (JSON field names)."""

    channel_id: str
    type: str
    to: Mapping[str, str]
    content: Mapping[str, Any] = field(default_factory=dict)
    mask: bool = False


def plan_single(tenant_id: str, send: SingleSend, channels: Mapping[str, Channel]) -> OutboundDraft:
    problems: list[FieldViolation] = []
    channel = channels.get(send.channel_id) if send.channel_id else None
    if not send.channel_id:
        problems.append(FieldViolation("channelId", "required"))
    elif channel is None:
        problems.append(FieldViolation("channelId", f"unknown channel {send.channel_id!r}"))
    if not send.type:
        problems.append(FieldViolation("type", "required"))
    destination = _destination(send.to, channel, problems)
    text = _check_content(send, problems)
    if channel is not None and send.type == "text" and not problems:
        problem = body_problem(channel.contact_type, {"text": text})
        if problem:
            problems.append(FieldViolation("text.body", problem))
    if problems or channel is None:
        raise invalid(problems)
    return OutboundDraft(
        channel_id=channel.channel_id,
        destination=destination,
        type=send.type,
        text=text,
        content=canonical_content(send),
        conversation_id=conversation_for(tenant_id, channel.channel_id, destination),
        mask=send.mask,
        customer_name=send.to.get("name", ""),
    )


def _destination(
    to: Mapping[str, str], channel: Channel | None, problems: list[FieldViolation]
) -> str:
    phone, email, contact = to.get("phone", ""), to.get("email", ""), to.get("contactId", "")
    if not (phone or email or contact):
        problems.append(FieldViolation("to", "one of phone, email or contactId is required"))
        return ""
    if channel is None:
        return ""
    kind = channel.contact_type.upper()
    try:
        if kind in PHONE_CHANNELS:
            if not phone:
                problems.append(FieldViolation("to.phone", f"required on {kind} channels"))
                return ""
            return normalize_msisdn(phone)
        if kind in EMAIL_CHANNELS:
            if not email:
                problems.append(FieldViolation("to.email", "required on EMAIL channels"))
                return ""
            return normalize_email(email)
    except AddressError as exc:
        problems.append(
            FieldViolation("to.phone" if kind in PHONE_CHANNELS else "to.email", str(exc))
        )
        return ""
    # Channels without an address format (sandbox, web) take the first address given.
    return phone or email or contact


def fill_text(draft: OutboundDraft, values: Mapping[str, str], kind: str) -> str:
    """Global variables into a single send's text, capped for the channel type.

    Single sends never required variables, so unknown ones stay as written.
    """
    part = _REQUIRED_PART.get(draft.type, (draft.type, None))[0]
    path = "text.body" if draft.type == "text" else f"{part}.caption"
    return _capped(path, kind, draft.text, values, keep_missing=True)


def fill_template(body: str, values: Mapping[str, str], kind: str) -> str:
    # Templates, and only templates, may leave a variable blank.
    return _capped("template", kind, body, values, blank_missing=True)


def _capped(
    path: str,
    kind: str,
    text: str,
    values: Mapping[str, str],
    *,
    keep_missing: bool = False,
    blank_missing: bool = False,
) -> str:
    try:
        rendered = render_text(
            text,
            values,
            keep_missing=keep_missing,
            blank_missing=blank_missing,
            limit=body_limit(kind),
        )
    except TooLong:
        raise invalid([FieldViolation(path, past_body_limit(kind))]) from None
    problem = body_problem(kind, {"text": rendered})
    if problem:
        raise invalid([FieldViolation(path, problem)])
    return rendered


def _check_content(send: SingleSend, problems: list[FieldViolation]) -> str:
    required = _REQUIRED_PART.get(send.type)
    if required is None:
        return ""
    part_name, inner = required
    part = send.content.get(part_name)
    if part is None or (inner is None and not part):
        problems.append(FieldViolation(part_name, f"required for type {send.type}"))
        return ""
    if inner is not None and not part.get(inner):
        problems.append(FieldViolation(f"{part_name}.{inner}", f"required for type {send.type}"))
        return ""
    if send.type == "text":
        max_chars(problems, "text.body", str(part["body"]), SINGLE_TEXT_MAX)
        return str(part["body"])
    if send.type == "template":
        return str(part.get("code") or part.get("id") or "")
    if isinstance(part, Mapping):
        return str(part.get("caption", ""))
    return ""


_MEDIA = {"image", "video", "audio", "voice", "document"}


def canonical_content(send: SingleSend) -> dict[str, Any]:
    """The single-send parts in the shape stored for every send (see content.parse_content).

    Keys: type, text, mediaUrl/caption/filename for media, latitude/longitude/
    name/address/url for locations, contacts, template, and buttons
    ([{id, title, type, url, phone}]) when the message offers choices.
    """
    c = send.content
    out: dict[str, Any] = {"type": send.type}
    if send.type == "text":
        out["text"] = str(c.get("text", {}).get("body", ""))
    elif send.type in _MEDIA:
        part = c.get("audio" if send.type == "voice" else send.type, {})
        out.update(
            mediaUrl=part.get("link", ""),
            caption=part.get("caption", ""),
            filename=part.get("filename", ""),
        )
    elif send.type == "location":
        loc = c.get("location", {})
        out.update(
            latitude=loose(number, loc.get("latitude"), None),
            longitude=loose(number, loc.get("longitude"), None),
            name=loc.get("name", ""),
            address=loc.get("address", ""),
            url=loc.get("url", ""),
        )
    elif send.type == "contacts":
        out["contacts"] = list(c.get("contacts", []))
    elif send.type == "template":
        out["template"] = dict(c.get("template", {}))
        out["text"] = str(out["template"].get("code") or out["template"].get("id") or "")
    buttons = c.get("options", {}).get("buttons", [])
    if buttons:
        out["buttons"] = [
            {
                "id": str(b.get("code") or b.get("uid") or b.get("label", "")),
                "title": str(b.get("label") or b.get("name") or ""),
                "type": str(b.get("type", "")),
                "url": str(b.get("url", "")),
                "phone": str(b.get("phone", "")),
            }
            for b in buttons
        ]
    if c.get("messageIdResend"):
        out["messageIdResend"] = c["messageIdResend"]
    return out
