"""Google RCS Business Messaging (RBM): agent messages and events, SMS fallback, webhooks.

Wire format (REST v1, https://rcsbusinessmessaging.googleapis.com):

- ``POST /v1/phones/{E.164}/agentMessages?messageId=&agentId=`` with an AgentMessage
  ``{"contentMessage": {text | contentInfo | richCard, "suggestions": [...]}}``;
  200 echoes it with ``name`` and ``sendTime``. A user who is not RCS-capable (or not
  reachable for this agent) gets 404 NOT_FOUND.
- ``POST /v1/phones/{E.164}/agentEvents?eventId=&agentId=`` with
  ``{"eventType": "IS_TYPING" | "READ", "messageId"}``.
- Errors are Google's ``{"error": {"code", "message", "status"}}``.
- Webhooks carry user events (DELIVERED, READ, IS_TYPING, ...) and user messages
  (text, suggestionResponse, location, userFile) as a Pub/Sub-style envelope whose
  ``message.data`` is the base64 JSON event; ``X-Goog-Signature`` is the base64
  HMAC-SHA512 of that decoded event, keyed with the webhook's clientToken.

Authentication: RBM wants an OAuth 2.0 access token of a service account with the
``rcsbusinessmessaging`` scope. Minting and refreshing it (a signed JWT exchanged at
Google's token endpoint) is outside this adapter: something else keeps the current
token in the variable named by ``token_env``. The adapter looks the token up in
``ctx.env`` on every request, so a live mapping hands it refreshed tokens.

Channel settings: ``agent_id``, ``token_env``, ``client_token_env``, ``base_url``,
``timeout_seconds``, ``sms_fallback_channel``. A tenant-created channel carries
``token`` and ``client_token`` as values instead; its token is then fixed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from adapters.base import (
    Accepted,
    AdapterContext,
    AttemptRecord,
    CallbackRejected,
    CallbackRequest,
    CallbackResult,
    Delivery,
    InboundMessage,
    PermanentProviderError,
    Receipt,
    ReceiptSink,
)
from adapters.media import vet_media_urls
from adapters.provider_http import HttpAnswer, HttpProviderClient, ProviderFault, Verdict
from adapters.settings import ChannelSettings, Credential, Secret
from server.domain.coerce import loose, number
from server.domain.content import Media, MessageContent, RichCard, Suggestion
from server.domain.models import Channel
from server.domain.status import DeliveryStatus
from server.domain.timeparse import parse_instant

log = logging.getLogger(__name__)

PROVIDER = "rbm"
DEFAULT_BASE_URL = "https://rcsbusinessmessaging.googleapis.com"
DEFAULT_TIMEOUT_SECONDS = 10.0

# Fixed namespace so that (message, attempt) always derives the same RBM id.
_ID_NAMESPACE = uuid.UUID("0d6c2a4e-7f1b-4b8e-9a55-3c1e6f2b9d70")

_ORIENTATIONS = ("VERTICAL", "HORIZONTAL")
_ALIGNMENTS = ("LEFT", "RIGHT")
_HEIGHTS = ("SHORT", "MEDIUM", "TALL")
_WIDTHS = ("SMALL", "MEDIUM")
_AGENT_EVENTS = ("IS_TYPING", "READ")

# User and server events that say something about a message we sent.
_RECEIPT_EVENTS = {
    "DELIVERED": DeliveryStatus.DELIVERED,
    "READ": DeliveryStatus.READ,
    # The message outlived its expireTime and RBM withdrew it undelivered.
    "TTL_EXPIRATION_REVOKED": DeliveryStatus.EXPIRED,
}


def rbm_message_id(message_id: str, attempt: int) -> str:
    """The messageId RBM gets for one attempt at one of our messages.

    RBM requires a UUID and silently ignores an id it has seen before, so every
    attempt needs its own; deriving it (UUIDv5 of message id and attempt) keeps it
    reproducible, and it is what RBM echoes in DELIVERED/READ receipts. The price:
    if an attempt times out after RBM took it, the retry is a second message.
    """
    return str(uuid.uuid5(_ID_NAMESPACE, f"{message_id}/a{attempt}"))


def rbm_event_id(message_id: str, attempt: int) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{message_id}/e{attempt}"))


def sign(body: bytes, client_token: str) -> str:
    """X-Goog-Signature: base64 of HMAC-SHA512 over the event JSON, keyed by clientToken."""
    digest = hmac.new(client_token.encode(), body, hashlib.sha512).digest()
    return base64.b64encode(digest).decode()


class ContentError(ValueError):
    """The delivery's content cannot be expressed as an RBM message."""


@dataclass(frozen=True, slots=True)
class RbmSettings:
    agent_id: str
    # Looked up on every request, so a refreshed token is used at once.
    token: Credential
    client_token: Secret
    sms_fallback_channel: str
    base_url: str
    timeout_seconds: float

    @classmethod
    def parse(
        cls, channel: Channel, ctx: AdapterContext, *, tenant_owned: bool = False
    ) -> RbmSettings:
        s = ChannelSettings(channel, ctx.env, tenant_owned=tenant_owned)
        token = s.credential("token")
        # Read once now as well, so a missing variable fails when the channel is built.
        token.current(ctx.env)
        return cls(
            agent_id=s.text("agent_id"),
            token=token,
            client_token=s.secret("client_token"),
            sms_fallback_channel=s.text("sms_fallback_channel", ""),
            base_url=s.url("base_url", DEFAULT_BASE_URL, guard=ctx.fetcher),
            timeout_seconds=s.seconds("timeout_seconds", DEFAULT_TIMEOUT_SECONDS),
        )


class RbmAdapter:
    def __init__(
        self, channel: Channel, ctx: AdapterContext, *, tenant_owned: bool = False
    ) -> None:
        self.channel = channel
        self._ctx = ctx
        self.settings = RbmSettings.parse(channel, ctx, tenant_owned=tenant_owned)
        self.agent_id = self.settings.agent_id
        self._client_token = self.settings.client_token
        self.sms_fallback_channel = self.settings.sms_fallback_channel
        self._http = HttpProviderClient(
            self.settings.base_url,
            provider="RBM",
            read_error=google_fault,
            total_timeout=self.settings.timeout_seconds,
            guard=ctx.fetcher if tenant_owned else None,
        )

    async def start(self, receipts: ReceiptSink) -> None:
        # Receipts arrive through handle_callback; there is nothing to poll.
        return None

    async def close(self) -> None:
        await self._http.close()

    # -------------------------------------------------------------------- sending

    async def send(self, delivery: Delivery) -> Accepted:
        content = delivery.content
        if content.type == "agentEvent":
            return await self._send_event(delivery)
        try:
            body = agent_message(content, delivery.expire_at)
        except ContentError as exc:
            raise PermanentProviderError(str(exc), "INVALID_CONTENT") from exc
        vet_media_urls(self._ctx.fetcher, body)
        message_id = rbm_message_id(delivery.message_id, delivery.attempt)
        status, answer, _ = await self._http.call(
            "POST",
            f"/v1/phones/{_phone(delivery.destination)}/agentMessages",
            params={"messageId": message_id, "agentId": self.agent_id},
            json=body,
            headers=self._auth(),
            accept=(404,),
        )
        if status == 404:
            return await self._not_rcs_capable(delivery, message_id, _error_message(answer))
        return Accepted(message_id)

    async def _send_event(self, delivery: Delivery) -> Accepted:
        content = delivery.content
        event = content.event
        if event not in _AGENT_EVENTS:
            raise PermanentProviderError(
                f"agent event must be IS_TYPING or READ, got {event!r}", "INVALID_CONTENT"
            )
        body: dict[str, Any] = {"eventType": event}
        if event == "READ":
            if not content.event_message_id:
                raise PermanentProviderError("a READ event needs messageId", "INVALID_CONTENT")
            body["messageId"] = content.event_message_id
        event_id = rbm_event_id(delivery.message_id, delivery.attempt)
        status, answer, _ = await self._http.call(
            "POST",
            f"/v1/phones/{_phone(delivery.destination)}/agentEvents",
            params={"eventId": event_id, "agentId": self.agent_id},
            json=body,
            headers=self._auth(),
            accept=(404,),
        )
        if status == 404:
            # An event has no SMS equivalent worth sending.
            raise PermanentProviderError(_error_message(answer) or "not RCS-capable", "404")
        return Accepted(event_id)

    async def _not_rcs_capable(self, delivery: Delivery, rbm_id: str, reason: str) -> Accepted:
        """404 NOT_FOUND: the user cannot be reached over RCS; send by SMS if asked to.

        Only 404 falls back. A 5xx or 429 says RBM is unwell, not that the user lacks
        RCS: a retry keeps the rich content, and RBM may even have taken the message
        before failing, so an SMS now could reach the user twice.
        """
        reason = reason or "user is not RCS-capable"
        options = delivery.content.options
        if not options.sms_fallback:
            raise PermanentProviderError(reason, "404")
        if not self.sms_fallback_channel:
            raise PermanentProviderError(f"{reason}; no sms_fallback_channel configured", "404")
        sms = self._ctx.adapter_for(self.sms_fallback_channel)
        if sms is None:
            raise PermanentProviderError(
                f"{reason}; SMS fallback channel {self.sms_fallback_channel} has no adapter",
                "404",
            )
        text = options.fallback_text or delivery.content.text
        if not text:
            raise PermanentProviderError(f"{reason}; no fallback text for SMS", "404")
        sms_content = MessageContent(type="text", text=text, sender=options.sms_sender_id)
        log.info("rbm: message %s not RCS-capable, falling back to SMS", delivery.message_id)
        accepted = await sms.send(
            replace(
                delivery,
                channel_id=self.sms_fallback_channel,
                type="text",
                text=text,
                content=sms_content,
            )
        )
        failed = AttemptRecord(
            self.channel.channel_id,
            PROVIDER,
            "FAILED",
            provider_message_id=rbm_id,
            error_code="404",
            reason=reason,
        )
        return Accepted(
            provider_message_id=accepted.provider_message_id,
            segments=accepted.segments,
            channel_id=accepted.channel_id or self.sms_fallback_channel,
            provider=accepted.provider or "sms",
            earlier=(failed, *accepted.earlier),
        )

    async def capabilities(self, msisdn: str) -> frozenset[str] | None:
        """RBM features the user supports, or None when RBM cannot reach them (404)."""
        status, answer, _ = await self._http.call(
            "GET",
            f"/v1/phones/{_phone(msisdn)}/capabilities",
            params={"requestId": str(uuid.uuid4()), "agentId": self.agent_id},
            headers=self._auth(),
            accept=(404,),
        )
        if status == 404:
            return None
        features = answer.get("features", []) if isinstance(answer, dict) else []
        return frozenset(str(f) for f in features)

    def _auth(self) -> dict[str, str]:
        token = self.settings.token.current(self._ctx.env)
        return {"Authorization": f"Bearer {token.reveal()}"}

    # ------------------------------------------------------------------- webhooks

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        if request.method.upper() != "POST":
            raise CallbackRejected("RBM webhooks are POSTs", 405)
        doc = _json_object(request.body)
        expected = self._client_token.reveal()
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
        return self._interpret(doc)

    def _interpret(self, event: Mapping[str, Any]) -> CallbackResult:
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
            inbound = self._inbound(event, timestamp)
            return CallbackResult(inbound=(inbound,) if inbound else ())
        return CallbackResult()

    def _inbound(self, event: Mapping[str, Any], timestamp: int) -> InboundMessage | None:
        common: dict[str, Any] = {
            "channel_id": self.channel.channel_id,
            "provider_message_id": str(event.get("messageId") or ""),
            "from_address": str(event["senderPhoneNumber"]),
            "to_address": str(event.get("agentId") or self.agent_id),
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


# ------------------------------------------------------------------ content mapping


def agent_message(content: MessageContent, expire_at: int | None = None) -> dict[str, Any]:
    """The AgentMessage for one rendered RCS content (anything but agentEvent)."""
    kind = content.type
    message: dict[str, Any] = {}
    if kind == "text":
        message["text"] = _required(content.text, "text")
    elif kind == "media":
        media = content.media or Media()
        message["contentInfo"] = _content_info(
            _required(media.url, "mediaContentUrl"), media.thumbnail_url
        )
    elif kind == "standalone":
        if content.rich_card is None:
            raise ContentError("richCard must be an object")
        message["richCard"] = {"standaloneCard": _standalone(content.rich_card)}
    elif kind == "carousel":
        if not content.cards:
            raise ContentError("a carousel needs cards")
        message["richCard"] = {
            "carouselCard": {
                "cardWidth": _enum(content.card_width, _WIDTHS, "MEDIUM"),
                "cardContents": [_card_content(card) for card in content.cards],
            }
        }
    else:
        raise ContentError(f"unsupported RCS content type {kind!r}")
    suggestions = [_suggestion(item) for item in content.suggestions]
    if suggestions:
        message["suggestions"] = suggestions
    body: dict[str, Any] = {"contentMessage": message}
    if expire_at is not None:
        # RBM withdraws the message undelivered at this time and says so by webhook.
        body["expireTime"] = _rfc3339(expire_at)
    return body


def _standalone(card: RichCard) -> dict[str, Any]:
    orientation = _enum(card.orientation, _ORIENTATIONS, "VERTICAL")
    out: dict[str, Any] = {"cardOrientation": orientation}
    # RBM only aligns the image of horizontal cards; for vertical ones it means nothing.
    if orientation == "HORIZONTAL" and card.thumbnail_alignment:
        out["thumbnailImageAlignment"] = _enum(card.thumbnail_alignment, _ALIGNMENTS, "")
    out["cardContent"] = _card_content(card)
    return out


def _card_content(card: RichCard) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if card.title:
        out["title"] = card.title
    if card.description:
        out["description"] = card.description
    if card.media is not None:
        out["media"] = {
            "height": _enum(card.media.height, _HEIGHTS, "MEDIUM"),
            "contentInfo": _content_info(
                _required(card.media.url, "url"), card.media.thumbnail_url
            ),
        }
    if not out:
        raise ContentError("a rich card needs a title, a description or media")
    suggestions = [_suggestion(item) for item in card.suggestions]
    if suggestions:
        out["suggestions"] = suggestions
    return out


def _content_info(url: str, thumbnail: str) -> dict[str, Any]:
    info: dict[str, Any] = {"fileUrl": url}
    if thumbnail:
        info["thumbnailUrl"] = thumbnail
    # RBM caches fetched files by URL; our URLs name fixed content, so the cache is right.
    info["forceRefresh"] = False
    return info


def _suggestion(item: Suggestion) -> dict[str, Any]:
    text = _required(item.display_text, "displayText")
    # RBM echoes postbackData when the chip is tapped; without one, the label will do.
    postback = item.postback_data or text
    if item.type == "reply":
        return {"reply": {"text": text, "postbackData": postback}}
    action: dict[str, Any] = {"text": text, "postbackData": postback}
    if item.fallback_url:
        action["fallbackUrl"] = item.fallback_url
    if item.type == "viewLocation":
        action["viewLocationAction"] = _view_location(item)
    elif item.type == "shareLocation":
        action["shareLocationAction"] = {}
    elif item.type == "openUrl":
        action["openUrlAction"] = {"url": _required(item.url, "url")}
    elif item.type == "calendarEvent":
        event = {
            "startTime": _timestamp(_required(item.start_time, "startTime")),
            "endTime": _timestamp(_required(item.end_time, "endTime")),
            "title": item.meeting_title or text,
        }
        if item.meeting_description:
            event["description"] = item.meeting_description
        action["createCalendarEventAction"] = event
    elif item.type == "dialPhone":
        action["dialAction"] = {"phoneNumber": _required(item.phone, "phone")}
    else:
        raise ContentError(f"unsupported suggestion type {item.type!r}")
    return {"action": action}


def _view_location(item: Suggestion) -> dict[str, Any]:
    label = item.label or item.address
    if item.latitude is not None and item.longitude is not None:
        view: dict[str, Any] = {"latLong": {"latitude": item.latitude, "longitude": item.longitude}}
        if label:
            view["label"] = label
        return view
    if label:
        # No coordinates: let the maps app search for the address instead.
        return {"query": label}
    raise ContentError("viewLocation needs latitude and longitude, or an address")


def _enum(value: Any, allowed: tuple[str, ...], default: str) -> str:
    """Maps "VERTICAL/HORIZONTAL"-style placeholders to their first valid alternative."""
    if value is None or value == "":
        return default
    for alternative in str(value).upper().split("/"):
        if alternative.strip() in allowed:
            return alternative.strip()
    raise ContentError(f"{value!r} is not one of {', '.join(allowed)}")


def _required(value: str, name: str) -> str:
    if not value:
        raise ContentError(f"{name} is required")
    return value


def _timestamp(value: str) -> str:
    """Calendar times as RBM's RFC 3339 UTC, from ISO 8601 or epoch input."""
    try:
        return _rfc3339(parse_instant(value))
    except ValueError as exc:
        raise ContentError(f"{value!r} is not a time") from exc


def _rfc3339(millis: int) -> str:
    moment = datetime.fromtimestamp(millis / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------ wire helpers


def _phone(msisdn: str) -> str:
    # RBM addresses users as phones/+<E.164>; "+" is legal in a path segment.
    return quote(msisdn, safe="+")


def _error(body: Any) -> Mapping[str, Any]:
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _error_message(body: Any) -> str:
    return str(_error(body).get("message") or "")


def _retry_delay(error: Mapping[str, Any]) -> float | None:
    """google.rpc.RetryInfo, which Google APIs may attach instead of Retry-After."""
    for detail in error.get("details") or []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


def google_fault(answer: HttpAnswer) -> ProviderFault:
    """Google's {"error": {"code", "message", "status", "details"}}: the status word
    (RESOURCE_EXHAUSTED, ...) is the code."""
    error = _error(answer.body)
    # 401 is almost always an expired access token (they last an hour): the message
    # is fine and goes through once the token is refreshed.
    verdict = Verdict.TRANSIENT if answer.status == 401 else None
    return ProviderFault(
        str(error.get("status") or ""),
        str(error.get("message") or ""),
        verdict,
        _retry_delay(error),
    )


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
