"""RBM webhooks: the console's clientToken check, signed user events and user messages."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from adapters.base import (
    CallbackRejected,
    CallbackRequest,
    CallbackResult,
    InboundMessage,
    Receipt,
)
from adapters.settings import Secret
from server.domain.coerce import loose, number
from server.domain.status import DeliveryStatus
from server.domain.timeparse import parse_instant

# User and server events that say something about a message we sent.
_RECEIPT_EVENTS = {
    "DELIVERED": DeliveryStatus.DELIVERED,
    "READ": DeliveryStatus.READ,
    # The message outlived its expireTime and RBM withdrew it undelivered.
    "TTL_EXPIRATION_REVOKED": DeliveryStatus.EXPIRED,
}


def sign(body: bytes, client_token: str) -> str:
    """X-Goog-Signature: base64 of HMAC-SHA512 over the event JSON, keyed by clientToken."""
    digest = hmac.new(client_token.encode(), body, hashlib.sha512).digest()
    return base64.b64encode(digest).decode()


def read_callback(
    request: CallbackRequest, client_token: Secret, channel_id: str, agent_id: str
) -> CallbackResult:
    """What one webhook POST says; raises CallbackRejected when it is not RBM's."""
    if request.method.upper() != "POST":
        raise CallbackRejected("RBM webhooks are POSTs", 405)
    doc = _json_object(request.body)
    expected = client_token.reveal()
    if "clientToken" in doc and "secret" in doc:
        # The console's webhook check: prove we know the clientToken by echoing the secret.
        if not hmac.compare_digest(str(doc["clientToken"]).encode(), expected.encode()):
            raise CallbackRejected("clientToken does not match")
        return CallbackResult(body=str(doc["secret"]).encode(), content_type="text/plain")
    message = doc.get("message")
    envelope = message if isinstance(message, dict) and "data" in message else None
    if envelope is not None:
        try:
            signed = base64.b64decode(str(envelope["data"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CallbackRejected("message.data is not base64", 400) from exc
    else:
        # Google documents only the envelope; a bare event (older integrations,
        # simulators) is taken when signed the same way over the body itself.
        signed = request.body
    signature = request.headers.get("x-goog-signature", "")
    if not signature or not hmac.compare_digest(
        signature.encode(), sign(signed, expected).encode()
    ):
        raise CallbackRejected("X-Goog-Signature does not match")
    if envelope is not None:
        attributes = envelope.get("attributes")
        if isinstance(attributes, dict) and attributes.get("type") == "agent_launch_event":
            return CallbackResult()  # launch-state news for operators, not messages
        doc = _json_object(signed)
    return _interpret(doc, channel_id, agent_id)


def _interpret(event: Mapping[str, Any], channel_id: str, agent_id: str) -> CallbackResult:
    timestamp = _millis(event.get("sendTime"))
    event_type = event.get("eventType")
    if event_type:
        status = _RECEIPT_EVENTS.get(str(event_type))
        message_id = str(event.get("messageId") or "")
        if status is None or not message_id:
            # IS_TYPING, SUBSCRIBE, UNSUBSCRIBE, TTL_EXPIRATION_REVOKE_FAILED (a
            # DELIVERED may still follow): acknowledged, nothing to record.
            return CallbackResult()
        return CallbackResult(receipts=(Receipt(message_id, status, timestamp=timestamp),))
    if event.get("senderPhoneNumber"):
        inbound = _inbound(event, timestamp, channel_id, agent_id)
        return CallbackResult(inbound=(inbound,) if inbound else ())
    return CallbackResult()


def _inbound(
    event: Mapping[str, Any], timestamp: int, channel_id: str, agent_id: str
) -> InboundMessage | None:
    common: dict[str, Any] = {
        "channel_id": channel_id,
        "provider_message_id": str(event.get("messageId") or ""),
        "from_address": str(event["senderPhoneNumber"]),
        "to_address": str(event.get("agentId") or agent_id),
        "timestamp": timestamp,
    }
    if "text" in event:
        return InboundMessage(**common, type="text", text=str(event["text"]), raw=event)
    answer = event.get("suggestionResponse")
    if isinstance(answer, dict):
        # The tap reads as what the chip said; postbackData is what the agent meant.
        raw = {**event, "postbackData": str(answer.get("postbackData", ""))}
        return InboundMessage(**common, type="text", text=str(answer.get("text", "")), raw=raw)
    where = event.get("location")
    if isinstance(where, dict):
        return InboundMessage(
            **common,
            type="location",
            latitude=loose(number, where.get("latitude"), None),
            longitude=loose(number, where.get("longitude"), None),
            raw=event,
        )
    upload = event.get("userFile")
    if isinstance(upload, dict):
        payload = upload.get("payload") or {}
        mime = str(payload.get("mimeType", ""))
        return InboundMessage(
            **common,
            type=_media_type(mime),
            media_url=str(payload.get("fileUri", "")),
            mime_type=mime,
            raw=event,
        )
    return None


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise CallbackRejected("body is not JSON", 400) from exc
    if not isinstance(doc, dict):
        raise CallbackRejected("body is not a JSON object", 400)
    return doc


def _millis(value: Any) -> int:
    if not value:
        return 0
    try:
        return parse_instant(str(value))
    except ValueError:
        return 0


def _media_type(mime: str) -> str:
    family = mime.split("/", 1)[0]
    return family if family in ("image", "video", "audio") else "document"
