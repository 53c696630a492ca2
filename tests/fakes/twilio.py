"""A fake Twilio Messages API on loopback, speaking Twilio's wire format.

It serves POST /2010-04-01/Accounts/{AccountSid}/Messages.json with basic
auth, Twilio's validation errors and response JSON, GET .../Messages/{Sid}.json
from the messages it holds, and plays Twilio's side of the callbacks: signed
status callbacks to the StatusCallback URL each message named, and signed
incoming-message webhooks.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from adapters.sms_encoding import segments
from adapters.twilio import twilio_signature
from fakes.server import Behaviour, FakeProviderServer

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
API_VERSION = "2010-04-01"

# Codes Twilio puts on failed/undelivered status callbacks when not told otherwise.
DEFAULT_ERROR = {"failed": "30008", "undelivered": "30003"}


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def twilio_error(code: int, message: str, status: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


@dataclass
class SentMessage:
    sid: str
    to: str
    from_: str
    body: str
    status_callback: str
    messaging_service_sid: str
    num_segments: int
    status: str = "queued"
    error_code: int | None = None


class FakeTwilio(FakeProviderServer):
    def __init__(
        self,
        behaviour: Behaviour = Behaviour.HAPPY,
        *,
        account_sid: str = "AC" + "0" * 32,
        auth_token: str = "fake-auth-token",
        failures: int = 1,
        retry_after: int = 1,
    ) -> None:
        super().__init__(behaviour, failures=failures, retry_after=retry_after)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: dict[str, SentMessage] = {}
        # The next this many lookups answer 503, as Twilio does when it is in trouble.
        self.lookup_failures = 0
        self.lookups: list[tuple[str, int]] = []  # (message sid, HTTP status answered)
        self._release = asyncio.Event()
        self.app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create)
        self.app.router.add_get("/2010-04-01/Accounts/{sid}/Messages/{msid}.json", self._fetch)

    async def misbehave(self) -> web.Response | None:
        if self.behaviour is Behaviour.BLACK_HOLE:
            # Hang as the base does, but until stop(): aiohttp's cleanup would
            # otherwise wait its 60 s shutdown timeout for this handler.
            await self._release.wait()
            return web.Response(status=504)
        return await super().misbehave()

    async def stop(self) -> None:
        self._release.set()
        await super().stop()

    async def __aenter__(self) -> FakeTwilio:
        await self.start()
        return self

    def throttled_body(self) -> Any:
        return twilio_error(20429, "Too Many Requests", 429)

    def server_error_body(self) -> Any:
        return twilio_error(20503, "Service Unavailable", 503)

    def _authorized(self, request: web.Request) -> bool:
        expected = f"{self.account_sid}:{self.auth_token}".encode()
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            return base64.b64decode(value, validate=True) == expected
        except ValueError:
            return False

    async def _create(self, request: web.Request) -> web.Response:
        rec = await self.record(request)
        if r := await self.misbehave():
            return r
        if not self._authorized(request) or request.match_info["sid"] != self.account_sid:
            return web.json_response(twilio_error(20003, "Authenticate", 401), status=401)
        form = rec.form
        to = form.get("To", "")
        if not E164.match(to):
            return web.json_response(
                twilio_error(21211, f"The 'To' number {to} is not a valid phone number.", 400),
                status=400,
            )
        if not form.get("Body"):
            return web.json_response(
                twilio_error(21602, "Message body is required.", 400), status=400
            )
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return web.json_response(
                twilio_error(21603, "A 'From' or 'MessagingServiceSid' is required.", 400),
                status=400,
            )
        if self.behaviour is Behaviour.REJECTING:
            return web.json_response(
                twilio_error(21610, "Attempt to send to unsubscribed recipient", 400), status=400
            )
        msg = SentMessage(
            sid=new_sid("SM"),
            to=to,
            from_=form.get("From", ""),
            body=form["Body"],
            status_callback=form.get("StatusCallback", ""),
            messaging_service_sid=form.get("MessagingServiceSid", ""),
            num_segments=segments(form["Body"]),
            status="accepted" if form.get("MessagingServiceSid") else "queued",
        )
        self.messages[msg.sid] = msg
        return web.json_response(self._resource(msg), status=201)

    async def _fetch(self, request: web.Request) -> web.Response:
        await self.record(request)
        sid = request.match_info["msid"]
        if not self._authorized(request) or request.match_info["sid"] != self.account_sid:
            response = web.json_response(twilio_error(20003, "Authenticate", 401), status=401)
        elif self.lookup_failures > 0:
            self.lookup_failures -= 1
            response = web.json_response(self.server_error_body(), status=503)
        elif sid not in self.messages:
            response = web.json_response(
                twilio_error(20404, f"The requested resource {request.path} was not found", 404),
                status=404,
            )
        else:
            response = web.json_response(self._resource(self.messages[sid]))
        self.lookups.append((sid, response.status))
        return response

    def set_status(self, sid: str, status: str, *, error_code: int | None = None) -> None:
        """Move a message on inside Twilio without calling back: a callback lost on the way."""
        msg = self.messages[sid]
        msg.status = status
        msg.error_code = error_code or (
            int(DEFAULT_ERROR[status]) if status in DEFAULT_ERROR else None
        )

    def _resource(self, msg: SentMessage) -> dict[str, Any]:
        # RFC 2822 in GMT, the way Twilio writes it: "Thu, 24 Aug 2023 05:01:45 +0000".
        now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{msg.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": msg.body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            # An integer in the resource, though callbacks carry it as a string.
            "error_code": msg.error_code,
            "error_message": None,
            "from": msg.from_ or None,
            "messaging_service_sid": msg.messaging_service_sid or None,
            "num_media": "0",
            # Twilio sends it as a string, and as "0" when a service picks the sender.
            "num_segments": "0" if msg.messaging_service_sid else str(msg.num_segments),
            "price": None,
            "price_unit": "USD",
            "sid": msg.sid,
            "status": msg.status,
            "subresource_uris": {"media": f"{base}/Media.json"},
            "to": msg.to,
            "uri": f"{base}.json",
        }

    # -- Twilio's calls to us -------------------------------------------

    async def post_signed(
        self, url: str, params: dict[str, str], *, token: str | None = None
    ) -> tuple[int, str, str]:
        """POST a form signed the way Twilio signs it; returns (status, content type, body)."""
        signature = twilio_signature(token or self.auth_token, url, params)
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=params, headers={"X-Twilio-Signature": signature}) as resp,
        ):
            return resp.status, resp.content_type, await resp.text()

    async def deliver(
        self, sid: str, status: str = "delivered", *, error_code: str | None = None
    ) -> int:
        """Send the status callback Twilio sends when message `sid` reaches `status`."""
        numeric = int(error_code) if error_code and error_code.isdigit() else None
        self.set_status(sid, status, error_code=numeric)
        msg = self.messages[sid]
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "From": msg.from_,
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": msg.to,
        }
        if msg.messaging_service_sid:
            params["MessagingServiceSid"] = msg.messaging_service_sid
        code = error_code or DEFAULT_ERROR.get(status)
        if code:
            params["ErrorCode"] = code
        http_status, _, _ = await self.post_signed(msg.status_callback, params)
        return http_status

    def inbound_params(
        self,
        from_: str,
        to: str,
        body: str,
        *,
        media: tuple[tuple[str, str], ...] = (),
    ) -> dict[str, str]:
        """The form of Twilio's incoming-message webhook; media is (url, content type) pairs."""
        sid = new_sid("MM" if media else "SM")
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "Body": body,
            "From": from_,
            "MessageSid": sid,
            "NumMedia": str(len(media)),
            "NumSegments": str(segments(body)),
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": to,
        }
        for i, (url, ctype) in enumerate(media):
            params[f"MediaUrl{i}"] = url
            params[f"MediaContentType{i}"] = ctype
        return params
