"""The messages webhook: Meta's signature, and the receipts and customer messages it carries."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping
from typing import Any

from adapters.base import InboundMessage, Receipt
from server.domain.coerce import as_text, integer, items, loose, mapping, number
from server.domain.status import DeliveryStatus

_RECEIPT_STATUS = {
    "sent": DeliveryStatus.SUBMITTED,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    # Voice messages report "played", which implies read.
    "played": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
}
_INBOUND_MEDIA = frozenset({"image", "video", "audio", "document", "sticker"})


def verify_signature(body: bytes, header: str, app_secret: str) -> bool:
    """Meta's scheme: `sha256=` + hex HMAC-SHA256 of the raw body, keyed by the app secret."""
    prefix = "sha256="
    if not header.startswith(prefix):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header[len(prefix) :].strip().lower().encode())


def parse_webhook(
    payload: Any, channel_id: str, phone_number_id: str
) -> tuple[list[Receipt], list[InboundMessage]]:
    """Statuses and customer messages from a messages-webhook payload."""
    receipts: list[Receipt] = []
    inbound: list[InboundMessage] = []
    if not isinstance(payload, Mapping) or payload.get("object") != "whatsapp_business_account":
        return receipts, inbound
    for value in _message_values(payload, phone_number_id):
        for status in items(value.get("statuses")):
            if (receipt := _receipt(status)) is not None:
                receipts.append(receipt)
        names = {
            as_text(c.get("wa_id")): as_text(mapping(c.get("profile")).get("name"))
            for c in items(value.get("contacts"))
            if isinstance(c, Mapping)
        }
        business = _e164(as_text(mapping(value.get("metadata")).get("display_phone_number")))
        for message in items(value.get("messages")):
            if isinstance(message, Mapping) and message.get("id"):
                inbound.append(_inbound(message, channel_id, business, names))
    return receipts, inbound


def _message_values(
    payload: Mapping[str, Any], phone_number_id: str
) -> Iterator[Mapping[str, Any]]:
    for entry in items(payload.get("entry")):
        for change in items(mapping(entry).get("changes")):
            change = mapping(change)
            if change.get("field", "messages") != "messages":
                continue
            value = mapping(change.get("value"))
            # One Meta app may serve several numbers through one webhook URL; another
            # number's traffic is not this channel's to report.
            number = as_text(mapping(value.get("metadata")).get("phone_number_id"))
            if number and number != phone_number_id:
                continue
            yield value


def _receipt(status: Any) -> Receipt | None:
    status = mapping(status)
    wamid = as_text(status.get("id"))
    mapped = _RECEIPT_STATUS.get(as_text(status.get("status")))
    if not wamid or mapped is None:
        return None
    reason = ""
    if mapped is DeliveryStatus.FAILED:
        reason = "; ".join(
            f"{as_text(e.get('code'))}: {as_text(e.get('title')) or as_text(e.get('message'))}"
            for e in map(mapping, items(status.get("errors")))
        )
    return Receipt(wamid, mapped, reason, _millis(status.get("timestamp")))


def _inbound(
    message: Mapping[str, Any], channel_id: str, business: str, names: Mapping[str, str]
) -> InboundMessage:
    kind = as_text(message.get("type"))
    sender = as_text(message.get("from"))
    part = mapping(message.get(kind))
    fields: dict[str, Any] = {}
    if kind == "text":
        fields["text"] = as_text(part.get("body"))
    elif kind in _INBOUND_MEDIA:
        # Media arrives as an id to fetch from the Graph API; fetching is not done here.
        media_id = as_text(part.get("id"))
        fields.update(
            media_url=f"media:{media_id}" if media_id else "",
            mime_type=as_text(part.get("mime_type")),
            caption=as_text(part.get("caption")),
        )
        if kind == "audio" and part.get("voice") is True:
            kind = "voice"
    elif kind == "location":
        fields.update(
            latitude=loose(number, part.get("latitude"), None),
            longitude=loose(number, part.get("longitude"), None),
            text=", ".join(
                v for v in (as_text(part.get("name")), as_text(part.get("address"))) if v
            ),
        )
    elif kind == "contacts":
        cards = [mapping(c) for c in items(message.get("contacts"))]
        shared = (as_text(mapping(c.get("name")).get("formatted_name")) for c in cards)
        fields["text"] = ", ".join(n for n in shared if n)
    elif kind == "button":  # a quick-reply button of a template
        fields["text"] = as_text(part.get("text")) or as_text(part.get("payload"))
    elif kind == "interactive":
        choice = mapping(part.get("button_reply") or part.get("list_reply"))
        kind = "list" if "list_reply" in part else "button"
        fields["text"] = as_text(choice.get("title")) or as_text(choice.get("id"))
    elif kind == "reaction":
        fields["text"] = as_text(part.get("emoji"))
    return InboundMessage(
        channel_id=channel_id,
        provider_message_id=as_text(message.get("id")),
        from_address=_e164(sender),
        to_address=business,
        type=kind or "unknown",
        contact_name=names.get(sender, ""),
        timestamp=_millis(message.get("timestamp")),
        raw=dict(message),
        **fields,
    )


def _millis(seconds: Any) -> int:
    # Meta stamps in Unix seconds (as a string); the platform counts milliseconds.
    stamp = loose(integer, seconds, None)
    return stamp * 1000 if stamp is not None else 0


def _e164(number: str) -> str:
    # wa_ids are phone numbers without the +; anything else (a future user id) is kept as is.
    digits = re.sub(r"[\s().+-]", "", number)
    return f"+{digits}" if digits.isascii() and digits.isdigit() else number
