"""WhatsApp Business Platform, Cloud API: sends through Meta's Graph API, the rest by webhook.

Sends are `POST /{api_version}/{phone_number_id}/messages` with a bearer token;
Meta answers with a `wamid.` message id. Receipts and customer messages come
back on one webhook that Meta first confirms with a GET handshake
(hub.mode / hub.verify_token / hub.challenge) and then signs on every POST
with `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body, keyed by the
app secret>`.

Channel settings: phone_number_id, access_token_env, app_secret_env,
verify_token_env, and optionally api_version, base_url, timeout_seconds.
Tenant-created channels carry access_token, app_secret and verify_token as
values instead of the *_env references.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

from adapters.base import (
    Accepted,
    AdapterContext,
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
from adapters.settings import ChannelSettings, Secret
from server.domain.coerce import as_text, integer, items, loose, mapping, number
from server.domain.content import Button, ContactCard, Location, Media, Template
from server.domain.models import Channel
from server.domain.status import DeliveryStatus

DEFAULT_API_VERSION = "v26.0"  # the current Graph API version at the time of writing
DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_TIMEOUT_SECONDS = 10.0

# Interactive reply buttons: Meta allows three, titles of 20 characters, ids of 256.
MAX_REPLY_BUTTONS = 3
BUTTON_TITLE_MAX = 20
BUTTON_ID_MAX = 256

# Meta error codes, by what a retry can do about them.
THROTTLED_CODES = frozenset({4, 80007, 130429, 131056})  # app, account, throughput, pair limits
TRANSIENT_CODES = frozenset({1, 2, 131000})  # unknown, service down, something went wrong
# Outside the 24-hour customer-service window (131047; 470 is its older number).
# Only the customer writing again, or a template, reopens it, so retries are pointless.
WINDOW_CLOSED_CODES = frozenset({470, 131047})

_RECEIPT_STATUS = {
    "sent": DeliveryStatus.SUBMITTED,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    # Voice messages report "played", which implies read.
    "played": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
}
_OUTBOUND_MEDIA = frozenset({"image", "video", "audio", "voice", "document"})
_CAPTIONED = frozenset({"image", "video", "document"})  # Meta's audio object has no caption
_INBOUND_MEDIA = frozenset({"image", "video", "audio", "document", "sticker"})
_URL = re.compile(r"https?://", re.IGNORECASE)
_BIRTHDAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class WhatsAppSettings:
    phone_number_id: str
    access_token: Secret
    # Required up front: an unverifiable webhook must fail at startup, not at the first POST.
    app_secret: Secret
    verify_token: Secret
    api_version: str
    base_url: str
    timeout_seconds: float

    @classmethod
    def parse(
        cls, channel: Channel, ctx: AdapterContext, *, tenant_owned: bool = False
    ) -> WhatsAppSettings:
        s = ChannelSettings(channel, ctx.env, tenant_owned=tenant_owned)
        return cls(
            phone_number_id=s.text("phone_number_id"),
            access_token=s.secret("access_token"),
            app_secret=s.secret("app_secret"),
            verify_token=s.secret("verify_token"),
            api_version=s.text("api_version", DEFAULT_API_VERSION).strip("/"),
            base_url=s.url("base_url", DEFAULT_BASE_URL, guard=ctx.fetcher),
            timeout_seconds=s.seconds("timeout_seconds", DEFAULT_TIMEOUT_SECONDS),
        )


class WhatsAppCloudAdapter:
    """One WhatsApp business phone number on Meta's Cloud API."""

    def __init__(
        self, channel: Channel, ctx: AdapterContext, *, tenant_owned: bool = False
    ) -> None:
        settings = WhatsAppSettings.parse(channel, ctx, tenant_owned=tenant_owned)
        self.channel_id = channel.channel_id
        self.phone_number_id = settings.phone_number_id
        self._access_token = settings.access_token
        self._app_secret = settings.app_secret
        self._verify_token = settings.verify_token
        self._messages_path = (
            f"/{quote(settings.api_version)}/{quote(self.phone_number_id, safe='')}/messages"
        )
        timeout = settings.timeout_seconds
        self._http = HttpProviderClient(
            settings.base_url,
            provider="WhatsApp Cloud API",
            read_error=meta_fault,
            total_timeout=timeout,
            connect_timeout=min(3.0, timeout),
            guard=ctx.fetcher if tenant_owned else None,
        )
        self._receipts: ReceiptSink | None = None
        self._fetcher = ctx.fetcher

    async def start(self, receipts: ReceiptSink) -> None:
        # Receipts arrive through handle_callback's result; nothing to poll.
        self._receipts = receipts

    async def send(self, delivery: Delivery) -> Accepted:
        body = message_body(delivery)
        vet_media_urls(self._fetcher, body)
        _, data, _ = await self._http.call(
            "POST",
            self._messages_path,
            json=body,
            headers={"Authorization": f"Bearer {self._access_token.reveal()}"},
        )
        return Accepted(accepted_message_id(data))

    async def close(self) -> None:
        await self._http.close()

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        method = request.method.upper()
        if method == "GET":
            return self._handshake(request.query)
        if method != "POST":
            raise CallbackRejected(f"method {method} not allowed", 405)
        signature = request.headers.get("x-hub-signature-256", "")
        if not signature:
            raise CallbackRejected("missing X-Hub-Signature-256", 401)
        if not verify_signature(request.body, signature, self._app_secret.reveal()):
            raise CallbackRejected("X-Hub-Signature-256 does not match the body", 403)
        try:
            payload = json.loads(request.body)
        except ValueError as exc:
            raise CallbackRejected("signed body is not JSON", 400) from exc
        receipts, inbound = parse_webhook(payload, self.channel_id, self.phone_number_id)
        # Parsing only: the caller persists, so Meta gets its 200 without waiting on us.
        return CallbackResult(receipts=tuple(receipts), inbound=tuple(inbound))

    def _handshake(self, query: Mapping[str, str]) -> CallbackResult:
        token = query.get("hub.verify_token", "")
        challenge = query.get("hub.challenge", "")
        if (
            query.get("hub.mode") == "subscribe"
            and challenge
            and hmac.compare_digest(token.encode(), self._verify_token.reveal().encode())
        ):
            return CallbackResult(status=200, body=challenge.encode(), content_type="text/plain")
        raise CallbackRejected("webhook verification failed", 403)


# --- outbound -------------------------------------------------------------------------------


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


def accepted_message_id(data: Any) -> str:
    messages = items(mapping(data).get("messages"))
    if wamid := as_text(mapping(messages[0] if messages else None).get("id")):
        return wamid
    # Permanent, not retryable: Meta may have sent it, and a retry could send it twice.
    raise PermanentProviderError("Cloud API answered 2xx without a message id", "NO_MESSAGE_ID")


def meta_fault(answer: HttpAnswer) -> ProviderFault:
    """Meta's error object: its code and message, and what the code says about retrying.

    Meta answers most errors, throttling included, with HTTP 400 and tells them
    apart by error.code, so a code it documents decides before the status.
    """
    error = mapping(mapping(answer.body).get("error"))
    code = loose(integer, error.get("code"), None)
    verdict = None
    if code in WINDOW_CLOSED_CODES:
        verdict = Verdict.PERMANENT
    elif code in THROTTLED_CODES:
        verdict = Verdict.THROTTLED
    elif code in TRANSIENT_CODES:
        verdict = Verdict.TRANSIENT
    return ProviderFault(
        str(code) if code is not None else "", as_text(error.get("message")), verdict
    )


# --- webhooks -------------------------------------------------------------------------------


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


# --- small helpers --------------------------------------------------------------------------


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


def _millis(seconds: Any) -> int:
    # Meta stamps in Unix seconds (as a string); the platform counts milliseconds.
    stamp = loose(integer, seconds, None)
    return stamp * 1000 if stamp is not None else 0


def _e164(number: str) -> str:
    # wa_ids are phone numbers without the +; anything else (a future user id) is kept as is.
    digits = re.sub(r"[\s().+-]", "", number)
    return f"+{digits}" if digits.isascii() and digits.isdigit() else number
