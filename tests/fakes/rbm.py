"""A fake Google RBM API: agentMessages, agentEvents and capabilities, strict about shapes.

It validates requests the way Google's API front end does: unknown JSON fields,
a missing messageId/agentId, or a content union with other than exactly one member
answer 400 INVALID_ARGUMENT, so a mapping mistake in the adapter fails loudly.
Numbers in `non_capable` answer 404 NOT_FOUND, as RBM does for users without RCS.
Helpers at the bottom build signed user-event webhooks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from fakes.server import Behaviour, FakeProviderServer

_CONTENT = ("text", "contentInfo", "richCard", "fileName", "uploadedRbmFile")
_ACTIONS = (
    "viewLocationAction",
    "shareLocationAction",
    "openUrlAction",
    "createCalendarEventAction",
    "dialAction",
)


class Invalid(Exception):
    pass


def google_error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


class FakeRbm(FakeProviderServer):
    def __init__(
        self,
        behaviour: Behaviour = Behaviour.HAPPY,
        *,
        token: str = "test-access-token",
        agent_id: str = "test_agent",
        non_capable: Iterable[str] = (),
        failures: int = 1,
        retry_after: int = 1,
    ) -> None:
        super().__init__(behaviour, failures=failures, retry_after=retry_after)
        self.token = token
        self.agent_id = agent_id
        self.non_capable = set(non_capable)
        # (msisdn, messageId, AgentMessage) for every message RBM accepted.
        self.messages: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.app.router.add_post("/v1/phones/{msisdn}/agentMessages", self._agent_message)
        self.app.router.add_post("/v1/phones/{msisdn}/agentEvents", self._agent_event)
        self.app.router.add_get("/v1/phones/{msisdn}/capabilities", self._capabilities)
        self._released = asyncio.Event()

    async def misbehave(self) -> web.Response | None:
        if self.behaviour is Behaviour.BLACK_HOLE:
            # Held until stop(), so shutdown never waits out aiohttp's 60 s grace on it.
            await self._released.wait()
            return web.Response(status=504)
        return await super().misbehave()

    async def stop(self) -> None:
        self._released.set()
        await super().stop()

    def throttled_body(self) -> Any:
        return google_error(
            429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."
        )

    def server_error_body(self) -> Any:
        return google_error(503, "UNAVAILABLE", "The service is currently unavailable.")

    # ------------------------------------------------------------------ handlers

    async def _agent_message(self, request: web.Request) -> web.Response:
        rec = await self.record(request)
        if (early := await self._gate(request, "messageId")) is not None:
            return early
        msisdn = request.match_info["msisdn"]
        try:
            check_agent_message(rec.json)
        except Invalid as exc:
            return _invalid(str(exc))
        if msisdn in self.non_capable:
            return _not_found()
        message_id = request.query["messageId"]
        self.messages.append((msisdn, message_id, rec.json))
        echo = {
            **rec.json,
            "name": f"phones/{msisdn}/agentMessages/{message_id}",
            "sendTime": _now(),
        }
        return web.json_response(echo)

    async def _agent_event(self, request: web.Request) -> web.Response:
        rec = await self.record(request)
        if (early := await self._gate(request, "eventId")) is not None:
            return early
        msisdn = request.match_info["msisdn"]
        try:
            check_agent_event(rec.json)
        except Invalid as exc:
            return _invalid(str(exc))
        if msisdn in self.non_capable:
            return _not_found()
        event_id = request.query["eventId"]
        self.events.append((msisdn, event_id, rec.json))
        return web.json_response(
            {**rec.json, "name": f"phones/{msisdn}/agentEvents/{event_id}", "sendTime": _now()}
        )

    async def _capabilities(self, request: web.Request) -> web.Response:
        await self.record(request)
        if (early := await self._gate(request, "requestId")) is not None:
            return early
        if request.match_info["msisdn"] in self.non_capable:
            return _not_found()
        return web.json_response(
            {"features": ["RICHCARD_STANDALONE", "RICHCARD_CAROUSEL", "ACTION_DIAL"]}
        )

    async def _gate(self, request: web.Request, id_param: str) -> web.Response | None:
        """What Google checks before looking at the body: behaviour, auth, ids."""
        if (r := await self.misbehave()) is not None:
            return r
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(
                google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials.",
                ),
                status=401,
            )
        if self.behaviour is Behaviour.REJECTING:
            return web.json_response(
                google_error(403, "PERMISSION_DENIED", "The caller does not have permission"),
                status=403,
            )
        if request.query.get("agentId") != self.agent_id:
            return _invalid("agentId is missing or unknown")
        value = request.query.get(id_param, "")
        try:
            uuid.UUID(value)
        except ValueError:
            return _invalid(f"{id_param} must be a UUID, got {value!r}")
        if not request.match_info["msisdn"].startswith("+"):
            return _invalid("phone number must be E.164")
        return None


# ------------------------------------------------------------------- validation


def _keys(doc: Any, where: str, allowed: Iterable[str], required: Iterable[str] = ()) -> dict:
    if not isinstance(doc, dict):
        raise Invalid(f"{where} must be an object")
    unknown = set(doc) - set(allowed)
    if unknown:
        raise Invalid(
            f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at {where}'
        )
    for key in required:
        if key not in doc:
            raise Invalid(f"{where}.{key} is required")
    return doc


def _one_of(doc: Mapping[str, Any], where: str, names: Iterable[str]) -> str:
    present = [n for n in names if n in doc]
    if len(present) != 1:
        raise Invalid(f"{where} must set exactly one of {', '.join(names)}; got {present}")
    return present[0]


def _string(value: Any, where: str, max_len: int | None = None) -> None:
    if not isinstance(value, str) or not value:
        raise Invalid(f"{where} must be a non-empty string")
    if max_len is not None and len(value) > max_len:
        raise Invalid(f"{where} is longer than {max_len} characters")


def _enum(value: Any, where: str, allowed: Iterable[str]) -> None:
    if value not in allowed:
        raise Invalid(f"{where}: invalid value {value!r}")


def check_agent_message(body: Any) -> None:
    doc = _keys(
        body,
        "AgentMessage",
        ("contentMessage", "expireTime", "ttl", "messageTrafficType"),
        ("contentMessage",),
    )
    if "expireTime" in doc and "ttl" in doc:
        raise Invalid("expireTime and ttl are mutually exclusive")
    message = _keys(doc["contentMessage"], "contentMessage", (*_CONTENT, "suggestions"))
    kind = _one_of(message, "contentMessage", _CONTENT)
    if kind == "text":
        _string(message["text"], "contentMessage.text", 3072)
    elif kind == "contentInfo":
        _content_info(message["contentInfo"], "contentMessage.contentInfo")
    elif kind == "richCard":
        _rich_card(message["richCard"])
    else:
        raise Invalid(f"the fake does not support {kind}")
    _suggestions(message.get("suggestions", []), "contentMessage.suggestions", 11)


def _content_info(doc: Any, where: str) -> None:
    info = _keys(doc, where, ("fileUrl", "thumbnailUrl", "forceRefresh"), ("fileUrl",))
    _string(info["fileUrl"], f"{where}.fileUrl")
    if "thumbnailUrl" in info:
        _string(info["thumbnailUrl"], f"{where}.thumbnailUrl")
    if "forceRefresh" in info and not isinstance(info["forceRefresh"], bool):
        raise Invalid(f"{where}.forceRefresh must be a boolean")


def _rich_card(doc: Any) -> None:
    card = _keys(doc, "richCard", ("standaloneCard", "carouselCard"))
    kind = _one_of(card, "richCard", ("standaloneCard", "carouselCard"))
    if kind == "standaloneCard":
        where = "richCard.standaloneCard"
        standalone = _keys(
            card[kind],
            where,
            ("cardOrientation", "thumbnailImageAlignment", "cardContent"),
            ("cardOrientation", "cardContent"),
        )
        _enum(standalone["cardOrientation"], f"{where}.cardOrientation", ("VERTICAL", "HORIZONTAL"))
        if "thumbnailImageAlignment" in standalone:
            _enum(
                standalone["thumbnailImageAlignment"],
                f"{where}.thumbnailImageAlignment",
                ("LEFT", "RIGHT"),
            )
        _card_content(standalone["cardContent"], f"{where}.cardContent")
    else:
        where = "richCard.carouselCard"
        carousel = _keys(
            card[kind], where, ("cardWidth", "cardContents"), ("cardWidth", "cardContents")
        )
        _enum(carousel["cardWidth"], f"{where}.cardWidth", ("SMALL", "MEDIUM"))
        contents = carousel["cardContents"]
        if not isinstance(contents, list) or not 2 <= len(contents) <= 10:
            raise Invalid(f"{where}.cardContents must hold 2 to 10 cards")
        for i, content in enumerate(contents):
            _card_content(content, f"{where}.cardContents[{i}]")


def _card_content(doc: Any, where: str) -> None:
    content = _keys(doc, where, ("title", "description", "media", "suggestions"))
    if not any(k in content for k in ("title", "description", "media")):
        raise Invalid(f"{where} needs a title, description or media")
    if "title" in content:
        _string(content["title"], f"{where}.title", 200)
    if "description" in content:
        _string(content["description"], f"{where}.description", 2000)
    if "media" in content:
        media = _keys(
            content["media"], f"{where}.media", ("height", "contentInfo", "fileName"), ("height",)
        )
        _enum(media["height"], f"{where}.media.height", ("SHORT", "MEDIUM", "TALL"))
        if _one_of(media, f"{where}.media", ("contentInfo", "fileName")) == "contentInfo":
            _content_info(media["contentInfo"], f"{where}.media.contentInfo")
    _suggestions(content.get("suggestions", []), f"{where}.suggestions", 4)


def _suggestions(items: Any, where: str, limit: int) -> None:
    if not isinstance(items, list) or len(items) > limit:
        raise Invalid(f"{where} must be a list of at most {limit}")
    for i, item in enumerate(items):
        _suggestion(item, f"{where}[{i}]")


def _suggestion(doc: Any, where: str) -> None:
    suggestion = _keys(doc, where, ("reply", "action"))
    if _one_of(suggestion, where, ("reply", "action")) == "reply":
        reply = _keys(
            suggestion["reply"],
            f"{where}.reply",
            ("text", "postbackData"),
            ("text", "postbackData"),
        )
        _string(reply["text"], f"{where}.reply.text", 25)
        _string(reply["postbackData"], f"{where}.reply.postbackData", 2048)
        return
    at = f"{where}.action"
    action = _keys(
        suggestion["action"],
        at,
        ("text", "postbackData", "fallbackUrl", *_ACTIONS),
        ("text", "postbackData"),
    )
    _string(action["text"], f"{at}.text", 25)
    _string(action["postbackData"], f"{at}.postbackData", 2048)
    kind = _one_of(action, at, _ACTIONS)
    body = action[kind]
    if kind == "viewLocationAction":
        view = _keys(body, f"{at}.{kind}", ("latLong", "label", "query"))
        if _one_of(view, f"{at}.{kind}", ("latLong", "query")) == "latLong":
            lat_long = _keys(
                view["latLong"],
                f"{at}.{kind}.latLong",
                ("latitude", "longitude"),
                ("latitude", "longitude"),
            )
            for axis in ("latitude", "longitude"):
                if not isinstance(lat_long[axis], int | float) or isinstance(lat_long[axis], bool):
                    raise Invalid(f"{at}.{kind}.latLong.{axis} must be a number")
    elif kind == "shareLocationAction":
        _keys(body, f"{at}.{kind}", ())
    elif kind == "openUrlAction":
        _string(_keys(body, f"{at}.{kind}", ("url",), ("url",))["url"], f"{at}.{kind}.url")
    elif kind == "dialAction":
        phone = _keys(body, f"{at}.{kind}", ("phoneNumber",), ("phoneNumber",))["phoneNumber"]
        _string(phone, f"{at}.{kind}.phoneNumber")
    else:
        event = _keys(
            body,
            f"{at}.{kind}",
            ("startTime", "endTime", "title", "description"),
            ("startTime", "endTime", "title"),
        )
        for key in ("startTime", "endTime"):
            try:
                datetime.fromisoformat(event[key])
            except (TypeError, ValueError) as exc:
                raise Invalid(f"{at}.{kind}.{key} is not an RFC 3339 time") from exc
        _string(event["title"], f"{at}.{kind}.title", 100)


def check_agent_event(body: Any) -> None:
    event = _keys(body, "AgentEvent", ("eventType", "messageId"), ("eventType",))
    _enum(event["eventType"], "AgentEvent.eventType", ("IS_TYPING", "READ"))
    if event["eventType"] == "READ":
        _string(event.get("messageId"), "AgentEvent.messageId")


def _invalid(message: str) -> web.Response:
    return web.json_response(google_error(400, "INVALID_ARGUMENT", message), status=400)


def _not_found() -> web.Response:
    return web.json_response(
        google_error(404, "NOT_FOUND", "Requested entity was not found."), status=404
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------- webhooks


def sign(body: bytes, client_token: str) -> str:
    """X-Goog-Signature as Google computes it, written independently of the adapter."""
    return base64.b64encode(hmac.new(client_token.encode(), body, hashlib.sha512).digest()).decode()


def user_event(
    event_type: str, message_id: str, phone: str = "+14155550100", agent_id: str = "test_agent"
) -> dict[str, Any]:
    """A UserEvent such as DELIVERED or READ, about one of the agent's messages."""
    return {
        "senderPhoneNumber": phone,
        "eventType": event_type,
        "eventId": str(uuid.uuid4()),
        "messageId": message_id,
        "sendTime": "2026-01-02T03:04:05.678Z",
        "agentId": agent_id,
    }


def user_message(
    phone: str = "+14155550100", agent_id: str = "test_agent", **content: Any
) -> dict[str, Any]:
    """A UserMessage; content is one of text=, suggestionResponse=, location=, userFile=."""
    return {
        "senderPhoneNumber": phone,
        "messageId": f"MsAbCdEf{uuid.uuid4().hex[:12]}",
        "sendTime": "2026-01-02T03:04:05.678Z",
        "agentId": agent_id,
        **content,
    }


def pubsub_webhook(
    event: Mapping[str, Any], client_token: str, attributes: Mapping[str, str] | None = None
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a webhook POST: the event base64'd in message.data, signed."""
    data = json.dumps(event).encode()
    envelope = {
        "message": {
            "attributes": dict(attributes or {"message_type": "USER_EVENT"}),
            "data": base64.b64encode(data).decode(),
            "messageId": str(uuid.uuid4().int)[:16],
            "publishTime": "2026-01-02T03:04:05.789Z",
        },
        "subscription": "projects/rbm-test/subscriptions/rbm-test-sub",
    }
    headers = {"content-type": "application/json", "x-goog-signature": sign(data, client_token)}
    return json.dumps(envelope).encode(), headers


def bare_webhook(event: Mapping[str, Any], client_token: str) -> tuple[bytes, dict[str, str]]:
    """The event posted as the body itself, signed over those bytes."""
    body = json.dumps(event).encode()
    return body, {"content-type": "application/json", "x-goog-signature": sign(body, client_token)}
