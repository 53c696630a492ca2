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

The AgentMessage is built in ``rbm_messages`` and webhooks are read in ``rbm_webhook``;
this module holds the settings, the calls to RBM and the SMS fallback.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from adapters.base import (
    Accepted,
    AdapterContext,
    AttemptRecord,
    CallbackRequest,
    CallbackResult,
    Delivery,
    PermanentProviderError,
    ReceiptSink,
)
from adapters.media import vet_media_urls
from adapters.provider_http import HttpAnswer, HttpProviderClient, ProviderFault, Verdict
from adapters.rbm_messages import ContentError, agent_message
from adapters.rbm_webhook import read_callback
from adapters.settings import ChannelSettings, Credential, Secret
from server.domain.content import MessageContent
from server.domain.models import Channel

log = logging.getLogger(__name__)

PROVIDER = "rbm"
DEFAULT_BASE_URL = "https://rcsbusinessmessaging.googleapis.com"
DEFAULT_TIMEOUT_SECONDS = 10.0

# Fixed namespace so that (message, attempt) always derives the same RBM id.
_ID_NAMESPACE = uuid.UUID("0d6c2a4e-7f1b-4b8e-9a55-3c1e6f2b9d70")

_AGENT_EVENTS = ("IS_TYPING", "READ")


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
        return read_callback(request, self._client_token, self.channel.channel_id, self.agent_id)


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
