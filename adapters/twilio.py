"""Twilio Programmable Messaging, SMS only.

Sends with the 2010-04-01 REST API (form-encoded POST to the account's
Messages resource, HTTP basic auth with the Account SID and auth token) and
takes Twilio's calls back to us: status callbacks for what we sent and the
incoming-message webhook, both signed with X-Twilio-Signature. A message whose
status callback never came can be looked up (GET on its Message resource).

Channel settings (channels file):
    account_sid            the AC... SID, also the basic-auth user name
    auth_token_env         name of the environment variable holding the auth token
    auth_token             the token itself, instead: how tenant-created channels carry it
    base_url               default https://api.twilio.com (tests point it at a fake)
    messaging_service_sid  optional MG... SID; Twilio then picks the sender
    timeout_seconds        optional total time for one API call, default 10
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from adapters import sms_encoding
from adapters.base import (
    Accepted,
    AdapterContext,
    CallbackRejected,
    CallbackRequest,
    CallbackResult,
    Delivery,
    InboundMessage,
    PermanentProviderError,
    ProviderStatus,
    Receipt,
    ReceiptSink,
    RetryableProviderError,
)
from adapters.provider_http import HttpAnswer, HttpProviderClient, ProviderFault, Verdict
from adapters.settings import ChannelSettings, Secret
from server.domain import coerce
from server.domain.models import Channel
from server.domain.status import DeliveryStatus

_FORM = "application/x-www-form-urlencoded"

DEFAULT_BASE_URL = "https://api.twilio.com"
DEFAULT_TIMEOUT_SECONDS = 10.0
SIGNATURE_HEADER = "x-twilio-signature"
THROTTLED_CODE = "20429"
# The recipient replied STOP to this sender: Twilio refuses until they reply START.
UNSUBSCRIBED_CODE = "21610"

# What we answer the incoming-message webhook with: Twilio expects TwiML, and an
# empty <Response/> means "no automatic reply".
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'

# Twilio's MessageStatus values. queued/accepted/scheduled/sending are still
# inside Twilio, which the 201 already told us, so they make no receipt;
# "sent" is the first word from a carrier. canceled only happens to scheduled
# messages, which this adapter does not create, so it counts as a failure.
_STATUS: Mapping[str, DeliveryStatus | None] = {
    "queued": None,
    "accepted": None,
    "scheduled": None,
    "sending": None,
    "sent": DeliveryStatus.SUBMITTED,
    "delivered": DeliveryStatus.DELIVERED,
    "undelivered": DeliveryStatus.UNDELIVERED,
    "failed": DeliveryStatus.FAILED,
    "read": DeliveryStatus.READ,
    "canceled": DeliveryStatus.FAILED,
}

# A looked-up message that Twilio reports "sent" is still waiting for the
# carrier's word, which is what the hub asked about: no final answer yet.
_QUERIED: Mapping[str, DeliveryStatus | None] = {**_STATUS, "sent": None}

# MessageStatus values Twilio uses for messages that reached us.
_INBOUND_STATUSES = frozenset({"received", "receiving"})


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1, keyed with the auth token, of the
    full URL followed by every POST parameter as name+value, sorted by name."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> tuple[str, ...]:
    """The URL as given, without its port and with the scheme's default port.

    Proxies in front of us may add or drop the port Twilio signed, so Twilio's
    own validators accept all three spellings; so do we.
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number; only the URL as given can match
        return (url,)
    if not parts.hostname:
        return (url,)
    if port is not None:
        bare = parts.netloc.rsplit(":", 1)[0]
        return (url, urlunsplit(parts._replace(netloc=bare)))
    default = 443 if parts.scheme == "https" else 80
    return (url, urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}")))


def _media_type(mime: str) -> str:
    kind = mime.split("/", 1)[0].lower()
    return kind if kind in ("image", "video", "audio") else "document"


@dataclass(frozen=True, slots=True)
class TwilioSettings:
    account_sid: str
    auth_token: Secret
    base_url: str
    messaging_service_sid: str
    timeout_seconds: float

    @classmethod
    def parse(
        cls, channel: Channel, ctx: AdapterContext, *, tenant_owned: bool = False
    ) -> TwilioSettings:
        s = ChannelSettings(channel, ctx.env, tenant_owned=tenant_owned)
        return cls(
            account_sid=s.text("account_sid"),
            auth_token=s.secret("auth_token"),
            base_url=s.url("base_url", DEFAULT_BASE_URL, guard=ctx.fetcher),
            messaging_service_sid=s.text("messaging_service_sid", ""),
            timeout_seconds=s.seconds("timeout_seconds", DEFAULT_TIMEOUT_SECONDS),
        )


class TwilioSmsAdapter:
    """One SMS channel on one Twilio account."""

    def __init__(
        self, channel: Channel, ctx: AdapterContext, *, tenant_owned: bool = False
    ) -> None:
        self.channel = channel
        settings = TwilioSettings.parse(channel, ctx, tenant_owned=tenant_owned)
        # Only the URL is kept: the context's env holds every credential.
        self._callback_url = ctx.callback_url(channel.channel_id)
        self._account_sid = settings.account_sid
        self._token = settings.auth_token
        self._service_sid = settings.messaging_service_sid
        timeout = settings.timeout_seconds
        self._http = HttpProviderClient(
            settings.base_url,
            provider="Twilio",
            read_error=twilio_fault,
            total_timeout=timeout,
            connect_timeout=min(3.0, timeout),
            guard=ctx.fetcher if tenant_owned else None,
        )
        self._messages = f"/2010-04-01/Accounts/{self._account_sid}/Messages"
        self._receipts: ReceiptSink | None = None

    def __repr__(self) -> str:
        # Spelled out so no later attribute can leak the token into a log line.
        return (
            f"TwilioSmsAdapter(channel_id={self.channel.channel_id!r}, "
            f"account_sid={self._account_sid!r})"
        )

    def _basic_auth(self) -> str:
        # Built per request rather than kept, so the token lives only in the Secret.
        pair = f"{self._account_sid}:{self._token.reveal()}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    async def start(self, receipts: ReceiptSink) -> None:
        # Twilio pushes every receipt through handle_callback; nothing to poll.
        self._receipts = receipts

    async def close(self) -> None:
        await self._http.close()

    # -- sending ---------------------------------------------------------

    def _form(self, delivery: Delivery) -> tuple[dict[str, str], str]:
        content = delivery.content
        # A media message sent as SMS carries its caption as the message's text.
        text = content.text or delivery.text
        form = {
            "To": delivery.destination,
            "Body": text,
            "StatusCallback": self._callback_url,
        }
        sender = content.sender
        if self._service_sid:
            # The service picks a sender from its pool unless the batch named one.
            form["MessagingServiceSid"] = self._service_sid
            if sender:
                form["From"] = sender
        else:
            sender = sender or self.channel.lane
            if not sender:
                raise PermanentProviderError(
                    "no sender: the message names none and the channel has no lane",
                    "NO_SENDER",
                )
            form["From"] = sender
        return form, text

    async def send(self, delivery: Delivery) -> Accepted:
        form, text = self._form(delivery)
        # Encoded here rather than handed to aiohttp as a dict: its FormData
        # path cost about 60 µs of CPU a request more, a tenth of what
        # dispatching a message costs.
        status, body, _ = await self._http.call(
            "POST",
            self._messages + ".json",
            data=urlencode(form).encode(),
            headers={"Authorization": self._basic_auth(), "Content-Type": _FORM},
        )
        sid = body.get("sid") if isinstance(body, dict) else None
        if not sid:
            # Twilio took it but did not name it; sending again could duplicate.
            raise PermanentProviderError(f"{status} without a message sid", "BAD_RESPONSE")
        return Accepted(str(sid), segments=sms_encoding.segments(text))

    # -- looking a message up ----------------------------------------------

    async def query_status(self, provider_message_id: str) -> ProviderStatus:
        """Fetch the Message resource; its status is the one callbacks carry."""
        path = f"{self._messages}/{quote(provider_message_id, safe='')}.json"
        status, body, _ = await self._http.call(
            "GET", path, headers={"Authorization": self._basic_auth()}
        )
        info = body if isinstance(body, dict) else {}
        said = str(info.get("status") or "")
        if not said:
            raise RetryableProviderError(f"{status} without a message status", "BAD_RESPONSE")
        # Anything Twilio may add later is taken as "not final yet".
        mapped = _QUERIED.get(said)
        code, message = info.get("error_code"), info.get("error_message")
        parts = [str(p) for p in (code, message) if p not in (None, "")]
        reason = ": ".join(parts)
        if said == "canceled" and not reason:
            reason = "canceled"
        return ProviderStatus(mapped, said, reason if mapped is not None else "")

    # -- callbacks -------------------------------------------------------

    def _verify(self, request: CallbackRequest) -> None:
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not given:
            raise CallbackRejected("missing X-Twilio-Signature", 403)
        token = self._token.reveal()
        for url in _url_variants(request.url):
            expected = twilio_signature(token, url, request.form)
            if hmac.compare_digest(expected.encode(), given.encode()):
                return
        raise CallbackRejected("X-Twilio-Signature does not match", 403)

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        self._verify(request)
        form = request.form
        status = form.get("MessageStatus", "")
        if status and status not in _INBOUND_STATUSES:
            return CallbackResult(receipts=self._receipt(form, status), status=204)
        if "Body" in form or coerce.loose(coerce.integer, form.get("NumMedia"), 0) > 0:
            return CallbackResult(
                inbound=(self._inbound(form),),
                body=EMPTY_TWIML,
                content_type="text/xml",
            )
        # Signed by Twilio but nothing we track (e.g. a voice webhook); a 2xx
        # stops Twilio from retrying it.
        return CallbackResult(status=204)

    def _receipt(self, form: Mapping[str, str], status: str) -> tuple[Receipt, ...]:
        mapped = _STATUS.get(status)
        sid = form.get("MessageSid") or form.get("SmsSid", "")
        if mapped is None or not sid:
            return ()
        code, message = form.get("ErrorCode", ""), form.get("ErrorMessage", "")
        reason = f"{code}: {message}" if code and message else code or message
        if status == "canceled" and not reason:
            reason = "canceled"
        return (Receipt(sid, mapped, reason),)

    def _inbound(self, form: Mapping[str, str]) -> InboundMessage:
        text = form.get("Body", "")
        media_url = form.get("MediaUrl0", "")
        mime = form.get("MediaContentType0", "")
        # InboundMessage holds one attachment; MediaUrl1... stay in raw.
        return InboundMessage(
            channel_id=self.channel.channel_id,
            provider_message_id=form.get("MessageSid") or form.get("SmsMessageSid", ""),
            from_address=form.get("From", ""),
            to_address=form.get("To", ""),
            type=_media_type(mime) if media_url else "text",
            text=text,
            media_url=media_url,
            mime_type=mime,
            caption=text if media_url else "",
            raw=dict(form),
        )


def twilio_fault(answer: HttpAnswer) -> ProviderFault:
    """Twilio's error JSON is {code, message, more_info, status}.

    400 (21211 bad To, 21602 no body, ...), 401 (20003 bad credentials) and
    404 fail the same way on every try, which the status already says; two
    codes say more than their status.
    """
    info = answer.body if isinstance(answer.body, dict) else {}
    code = coerce.loose(coerce.text, info.get("code"), "")
    verdict = None
    if code == THROTTLED_CODE:
        verdict = Verdict.THROTTLED
    elif code == UNSUBSCRIBED_CODE:
        verdict = Verdict.OPTED_OUT
    return ProviderFault(code, coerce.loose(coerce.text, info.get("message"), ""), verdict)
