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

Request bodies are built in ``whatsapp_messages`` and webhook payloads read in
``whatsapp_webhook``; this module holds the settings, the adapter and the
reading of Meta's answers.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from adapters.base import (
    Accepted,
    AdapterContext,
    CallbackRejected,
    CallbackRequest,
    CallbackResult,
    Delivery,
    PermanentProviderError,
    ReceiptSink,
)
from adapters.media import vet_media_urls
from adapters.provider_http import HttpAnswer, HttpProviderClient, ProviderFault, Verdict
from adapters.settings import ChannelSettings, Secret
from adapters.whatsapp_messages import message_body
from adapters.whatsapp_webhook import parse_webhook, verify_signature
from server.domain.coerce import as_text, integer, items, loose, mapping
from server.domain.models import Channel

DEFAULT_API_VERSION = "v26.0"  # the current Graph API version at the time of writing
DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_TIMEOUT_SECONDS = 10.0

# Meta error codes, by what a retry can do about them.
THROTTLED_CODES = frozenset({4, 80007, 130429, 131056})  # app, account, throughput, pair limits
TRANSIENT_CODES = frozenset({1, 2, 131000})  # unknown, service down, something went wrong
# Outside the 24-hour customer-service window (131047; 470 is its older number).
# Only the customer writing again, or a template, reopens it, so retries are pointless.
WINDOW_CLOSED_CODES = frozenset({470, 131047})


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
