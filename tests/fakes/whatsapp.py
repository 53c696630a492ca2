"""Meta's WhatsApp Cloud API on loopback, and Meta-shaped signed webhooks to feed the adapter.

`FakeWhatsApp` serves `POST /{version}/{phone_number_id}/messages`: it checks
the bearer token (401, code 190), validates the body the way the Cloud API
documents it (400, code 100, with the problems in error_data.details) and
answers with the real success shape and a `wamid.` id. REJECTING answers the
24-hour-window error (131047) unless given another; THROTTLED answers 429
with code 130429 and Retry-After.

The webhook helpers build payloads as Meta sends them (object
whatsapp_business_account, entry[].changes[].value with metadata, contacts,
messages or statuses) and sign them with X-Hub-Signature-256.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from adapters.base import CallbackRequest
from fakes.server import Behaviour, FakeProviderServer

GRAPH_VERSION = "v26.0"
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_PHONE_NUMBER = "15550783881"
WABA_ID = "102290129340398"
ERROR_CODES_HREF = "/documentation/business-messaging/whatsapp/support/error-codes"


def meta_error(code: int, message: str, details: str = "", type_: str = "OAuthException") -> dict:
    """A Graph API error body: {"error": {message, type, code, error_data, fbtrace_id}}."""
    error: dict[str, Any] = {"message": message, "type": type_, "code": code}
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    error["fbtrace_id"] = "A" + secrets.token_urlsafe(16)
    return {"error": error}


def re_engagement_error() -> dict:
    return meta_error(
        131047,
        "(#131047) Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number.",
    )


def rate_limit_error() -> dict:
    return meta_error(
        130429,
        "(#130429) Rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number in a short period of time",
    )


def invalid_token_error() -> dict:
    return meta_error(190, "Invalid OAuth access token - Cannot parse access token")


def new_wamid() -> str:
    return "wamid." + base64.b64encode(secrets.token_bytes(30)).decode()


class FakeWhatsApp(FakeProviderServer):
    def __init__(
        self,
        behaviour: Behaviour = Behaviour.HAPPY,
        *,
        failures: int = 1,
        retry_after: int = 1,
        access_token: str = "EAAG-fake-token",
        phone_number_id: str = PHONE_NUMBER_ID,
        rejection: tuple[int, dict] | None = None,
    ) -> None:
        super().__init__(behaviour, failures=failures, retry_after=retry_after)
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        # What REJECTING answers: (HTTP status, body).
        self.rejection = rejection or (400, re_engagement_error())
        self.accepted: list[tuple[str, dict]] = []  # (wamid, request body)
        self.app.router.add_post("/{version}/{phone_number_id}/messages", self._messages)

    def throttled_body(self) -> Any:
        return rate_limit_error()

    def server_error_body(self) -> Any:
        return meta_error(2, "(#2) Service temporarily unavailable", type_="OAuthException")

    async def _messages(self, request: web.Request) -> web.Response:
        rec = await self.record(request)
        if r := await self.misbehave():
            return r
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return web.json_response(invalid_token_error(), status=401)
        version = request.match_info["version"]
        number = request.match_info["phone_number_id"]
        if not re.fullmatch(r"v\d+\.\d+", version) or number != self.phone_number_id:
            return web.json_response(
                meta_error(
                    100,
                    f"Unsupported post request. Object with ID '{number}' does not exist, "
                    "cannot be loaded due to missing permissions, or does not support this "
                    "operation.",
                    type_="GraphMethodException",
                ),
                status=400,
            )
        if self.behaviour is Behaviour.REJECTING:
            status, body = self.rejection
            return web.json_response(body, status=status)
        problems = check_message(rec.json)
        if problems:
            return web.json_response(
                meta_error(100, "(#100) Invalid parameter", "; ".join(problems)), status=400
            )
        wamid = new_wamid()
        self.accepted.append((wamid, rec.json))
        to = rec.json["to"]
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
                "messages": [{"id": wamid}],
            }
        )


# --- request validation, per the Cloud API message object --------------------------------


def check_message(body: Any) -> list[str]:
    if not isinstance(body, Mapping):
        return ["body must be a JSON object"]
    problems: list[str] = []
    if body.get("messaging_product") != "whatsapp":
        problems.append("messaging_product must be whatsapp")
    if body.get("recipient_type", "individual") != "individual":
        problems.append("recipient_type must be individual")
    if not re.fullmatch(r"\+?[0-9]{7,15}", str(body.get("to", ""))):
        problems.append("to must be the user's phone number")
    kind = body.get("type")
    checker = _CHECKERS.get(kind)  # type: ignore[arg-type]
    if checker is None:
        return [*problems, f"type {kind!r} is not supported"]
    part = body.get(kind)
    if not isinstance(part, list if kind == "contacts" else Mapping):
        return [*problems, f"{kind} object is required"]
    return problems + checker(part)


def _text(part: Any) -> list[str]:
    problems = _only(part, {"body", "preview_url"}, "text")
    if not _nonempty(part.get("body")) or len(part["body"]) > 4096:
        problems.append("text.body must be 1-4096 characters")
    if "preview_url" in part and not isinstance(part["preview_url"], bool):
        problems.append("text.preview_url must be a boolean")
    return problems


def _media(kind: str, extra: set[str]) -> Any:
    def check(part: Any) -> list[str]:
        problems = _only(part, {"id", "link", *extra}, kind)
        if ("id" in part) == ("link" in part):
            problems.append(f"{kind} needs exactly one of id and link")
        if "link" in part and not re.match(r"https?://", str(part["link"])):
            problems.append(f"{kind}.link must be an http(s) URL")
        if "caption" in part and (not _nonempty(part["caption"]) or len(part["caption"]) > 1024):
            problems.append(f"{kind}.caption must be 1-1024 characters")
        if "filename" in part and not _nonempty(part["filename"]):
            problems.append(f"{kind}.filename must be a non-empty string")
        return problems

    return check


def _location(part: Any) -> list[str]:
    problems = _only(part, {"latitude", "longitude", "name", "address"}, "location")
    for key, bound in (("latitude", 90), ("longitude", 180)):
        value = part.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            problems.append(f"location.{key} is required")
            continue
        try:
            if abs(float(value)) > bound:
                problems.append(f"location.{key} out of range")
        except ValueError:
            problems.append(f"location.{key} must be decimal degrees")
    for key in ("name", "address"):
        if key in part and not _nonempty(part[key]):
            problems.append(f"location.{key} must be a non-empty string")
    return problems


_CONTACT_FIELDS = {
    "addresses": {"street", "city", "state", "zip", "country", "country_code", "type"},
    "emails": {"email", "type"},
    "phones": {"phone", "type", "wa_id"},
    "urls": {"url", "type"},
}


def _contacts(part: Any) -> list[str]:
    if not isinstance(part, list) or not part:
        return ["contacts must be a non-empty array"]
    problems: list[str] = []
    for i, card in enumerate(part):
        where = f"contacts[{i}]"
        if not isinstance(card, Mapping):
            problems.append(f"{where} must be an object")
            continue
        problems += _only(card, {"name", "birthday", "org", *_CONTACT_FIELDS}, where)
        name = card.get("name")
        if not isinstance(name, Mapping) or not _nonempty(name.get("formatted_name")):
            problems.append(f"{where}.name.formatted_name is required")
        else:
            problems += _strings(name, f"{where}.name")
        if "birthday" in card and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(card["birthday"])):
            problems.append(f"{where}.birthday must be YYYY-MM-DD")
        if "org" in card:
            problems += _only(card["org"], {"company", "department", "title"}, f"{where}.org")
            problems += _strings(card["org"], f"{where}.org")
        for key, allowed in _CONTACT_FIELDS.items():
            entries = card.get(key, [])
            if not isinstance(entries, list):
                problems.append(f"{where}.{key} must be an array")
                continue
            for j, entry in enumerate(entries):
                problems += _only(entry, allowed, f"{where}.{key}[{j}]")
                problems += _strings(entry, f"{where}.{key}[{j}]")
    return problems


def _interactive(part: Any) -> list[str]:
    if part.get("type") != "button":
        return [f"interactive.type {part.get('type')!r} is not supported by this fake"]
    problems = _only(part, {"type", "header", "body", "footer", "action"}, "interactive")
    body = part.get("body")
    if not isinstance(body, Mapping) or not _nonempty(body.get("text")):
        problems.append("interactive.body.text is required")
    elif len(body["text"]) > 1024:
        problems.append("interactive.body.text must be at most 1024 characters")
    buttons = (
        part.get("action", {}).get("buttons") if isinstance(part.get("action"), Mapping) else None
    )
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        return [*problems, "interactive.action.buttons must hold 1-3 buttons"]
    titles = []
    for i, button in enumerate(buttons):
        reply = button.get("reply") if isinstance(button, Mapping) else None
        if not isinstance(reply, Mapping) or button.get("type") != "reply":
            problems.append(f"buttons[{i}] must be a reply button")
            continue
        if not _nonempty(reply.get("id")) or len(reply["id"]) > 256:
            problems.append(f"buttons[{i}].reply.id must be 1-256 characters")
        if not _nonempty(reply.get("title")) or len(reply["title"]) > 20:
            problems.append(f"buttons[{i}].reply.title must be 1-20 characters")
        titles.append(reply.get("title"))
    if len(set(titles)) != len(titles):
        problems.append("button titles must be unique")
    return problems


def _template(part: Any) -> list[str]:
    problems = _only(part, {"name", "language", "components"}, "template")
    if not _nonempty(part.get("name")) or not re.fullmatch(r"[a-z0-9_]+", part["name"]):
        problems.append("template.name must be lowercase letters, digits and underscores")
    language = part.get("language")
    if not isinstance(language, Mapping) or not _nonempty(language.get("code")):
        problems.append("template.language.code is required")
    components = part.get("components", [])
    if not isinstance(components, list):
        return [*problems, "template.components must be an array"]
    for i, component in enumerate(components):
        if not isinstance(component, Mapping) or component.get("type") not in (
            "header",
            "body",
            "button",
        ):
            problems.append(f"components[{i}].type must be header, body or button")
            continue
        for j, parameter in enumerate(component.get("parameters", [])):
            if not isinstance(parameter, Mapping) or parameter.get("type") != "text":
                problems.append(f"components[{i}].parameters[{j}] must be a text parameter")
            elif not _nonempty(parameter.get("text")):
                problems.append(f"components[{i}].parameters[{j}].text is required")
    return problems


_CHECKERS = {
    "text": _text,
    "image": _media("image", {"caption"}),
    "video": _media("video", {"caption"}),
    "audio": _media("audio", set()),
    "document": _media("document", {"caption", "filename"}),
    "location": _location,
    "contacts": _contacts,
    "interactive": _interactive,
    "template": _template,
}


def _only(part: Any, allowed: set[str], where: str) -> list[str]:
    if not isinstance(part, Mapping):
        return [f"{where} must be an object"]
    return [f"{where}.{k} is not a known parameter" for k in part if k not in allowed]


def _strings(part: Any, where: str) -> list[str]:
    if not isinstance(part, Mapping):
        return []
    return [f"{where}.{k} must be a string" for k, v in part.items() if not isinstance(v, str)]


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


# --- webhooks as Meta sends them ----------------------------------------------------------


def sign(body: bytes, app_secret: str) -> str:
    """X-Hub-Signature-256 for body: sha256= and the hex HMAC-SHA256 keyed by the app secret."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload: Mapping[str, Any]) -> bytes:
    # Meta escapes non-ASCII as \\uXXXX; json.dumps does the same by default.
    return json.dumps(payload, separators=(",", ":")).encode()


def webhook(
    value: Mapping[str, Any],
    *,
    phone_number_id: str = PHONE_NUMBER_ID,
    display_phone_number: str = DISPLAY_PHONE_NUMBER,
) -> dict[str, Any]:
    """A messages-webhook payload around one change value."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA_ID,
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": display_phone_number,
                                "phone_number_id": phone_number_id,
                            },
                            **value,
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }


def status(
    wamid: str,
    state: str,
    *,
    recipient_id: str = "16505551234",
    timestamp: int = 1750857384,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One statuses[] entry: sent, delivered, read or failed."""
    entry: dict[str, Any] = {
        "id": wamid,
        "status": state,
        "timestamp": str(timestamp),
        "recipient_id": recipient_id,
    }
    if state in ("sent", "delivered", "read"):
        entry["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "service"}
    if errors is not None:
        entry["errors"] = errors
    return entry


def status_error(code: int, title: str, details: str = "") -> dict[str, Any]:
    return {
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": details or title},
        "href": ERROR_CODES_HREF,
    }


def statuses_payload(*entries: dict[str, Any], **where: str) -> dict[str, Any]:
    return webhook({"statuses": list(entries)}, **where)


def inbound_payload(
    *messages: dict[str, Any],
    profile_name: str = "Sheena Nelson",
    wa_id: str = "16505551234",
    **where: str,
) -> dict[str, Any]:
    return webhook(
        {
            "contacts": [{"profile": {"name": profile_name}, "wa_id": wa_id}],
            "messages": list(messages),
        },
        **where,
    )


def user_message(
    kind: str,
    part: Any,
    *,
    sender: str = "16505551234",
    message_id: str = "",
    timestamp: int = 1749416383,
) -> dict[str, Any]:
    """One messages[] entry of the given type with its type object."""
    return {
        "from": sender,
        "id": message_id or new_wamid(),
        "timestamp": str(timestamp),
        "type": kind,
        kind: part,
    }


def text_message(body: str, **kw: Any) -> dict[str, Any]:
    return user_message("text", {"body": body}, **kw)


def image_message(
    media_id: str, *, caption: str = "", mime_type: str = "image/jpeg", **kw: Any
) -> dict[str, Any]:
    image: dict[str, Any] = {
        "mime_type": mime_type,
        "sha256": base64.b64encode(hashlib.sha256(media_id.encode()).digest()).decode(),
        "id": media_id,
    }
    if caption:
        image["caption"] = caption
    return user_message("image", image, **kw)


def signed_callback(
    payload: Mapping[str, Any] | bytes,
    app_secret: str,
    *,
    url: str = "https://hub.example.com/callbacks/wa-main",
) -> CallbackRequest:
    """The POST Meta would make, as the adapter sees it (header names lower-cased)."""
    body = payload if isinstance(payload, bytes) else encode(payload)
    headers = {"content-type": "application/json", "x-hub-signature-256": sign(body, app_secret)}
    return CallbackRequest("POST", url, headers, {}, body)


def verification_request(
    verify_token: str,
    challenge: str = "1158201444",
    mode: str = "subscribe",
    *,
    url: str = "https://hub.example.com/callbacks/wa-main",
) -> CallbackRequest:
    """The GET handshake Meta makes when the webhook is configured."""
    query = {"hub.mode": mode, "hub.challenge": challenge, "hub.verify_token": verify_token}
    return CallbackRequest("GET", url, {}, query, b"")
