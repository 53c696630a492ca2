"""Validation of the send endpoints, end to end over REST against a real hub.

Each test starts one hub (per database engine) and pushes a whole table of
requests through it. Every rejection must be a 400 naming exactly the offending
JSON path; no request, valid or not, may ever produce a 5xx.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from server.api.context import DEFAULT_TENANT
from support.hub import channel_to, rest_session, running_hub

SEEDS = Path(__file__).parent / "seeds"
V2 = "/api/v2/message/send"
V1 = "/api/v1/message/send"

UK = "+447911123456"
IN = "+919988776655"
KIB = 1024
MIB = 1024 * 1024


def seed(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SEEDS / name).read_text())
    return data


# -- request builders --------------------------------------------------------------------


def sms(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": "sms",
        "from": "CNNECT",
        "to": [{"msisdn": [UK]}],
        "content": {"type": "text", "text": "hello"},
    }
    body.update(overrides)
    return body


def sms_text(text: str) -> dict[str, Any]:
    return sms(content={"type": "text", "text": text})


def email(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": "email",
        "from": "offers@brand.example.org",
        "to": [{"email": ["john.smith@example.com"]}],
        "content": {"type": "text", "subject": "Hello", "text": "hello"},
    }
    body.update(overrides)
    return body


def email_content(**content: Any) -> dict[str, Any]:
    return email(content={"type": "html", "subject": "Hello", "html": "<p>hi</p>", **content})


def rcs(**content: Any) -> dict[str, Any]:
    return {
        "channel": "rcs",
        "from": "a_156887855308557980",
        "to": [{"msisdn": [IN]}],
        "content": content,
    }


def whatsapp(**content: Any) -> dict[str, Any]:
    return {
        "channel": "whatsapp",
        "from": "wa-app",
        "to": [{"msisdn": [UK]}],
        "content": content,
    }


def without(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}


def suggestions(n: int) -> list[dict[str, str]]:
    return [
        {"type": "reply", "displayText": f"Option {i}", "postbackData": f"opt_{i}"}
        for i in range(n)
    ]


def rich_card(n_suggestions: int) -> dict[str, Any]:
    return {
        "title": "Card",
        "description": "A card",
        "media": {"height": "MEDIUM", "url": "https://example.com/a.png"},
        "suggestions": suggestions(n_suggestions),
    }


def carousel(*per_card: int) -> dict[str, Any]:
    return rcs(type="carousel", width="MEDIUM", cards=[rich_card(n) for n in per_card])


def attachments(*sizes: int) -> list[dict[str, Any]]:
    return [
        {"mimeType": "application/pdf", "name": f"f{i}.pdf", "mediaUrl": f"https://x/{i}.pdf"}
        | {"size": size}
        for i, size in enumerate(sizes)
    ]


def uk_numbers(count: int) -> list[str]:
    # +44 7911 1xxxxx: valid UK mobiles per phonenumbers, written three ways.
    forms = ("+447911{n}", "447911{n}", "+44 7911 {n}")
    return [forms[i % 3].format(n=100000 + i) for i in range(count)]


def e164_uk(count: int) -> list[str]:
    return [f"+447911{100000 + i}" for i in range(count)]


def split(items: list[str], groups: int) -> list[list[str]]:
    size = -(-len(items) // groups)
    return [items[i : i + size] for i in range(0, len(items), size)]


def iso_z(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- HTTP client that refuses 5xx --------------------------------------------------------


class Api:
    def __init__(self, http: aiohttp.ClientSession, port: int) -> None:
        self.http = http
        self.base = f"http://127.0.0.1:{port}"

    async def post(self, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, (str, bytes)) else json.dumps(body, ensure_ascii=False)
        async with self.http.post(
            self.base + path, data=data, headers={"Content-Type": "application/json"}
        ) as resp:
            payload = await resp.json(content_type=None)
            assert resp.status < 500, (path, resp.status, payload)
            return resp.status, payload

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self.http.get(self.base + path) as resp:
            payload = await resp.json(content_type=None)
            assert resp.status < 500, (path, resp.status, payload)
            return resp.status, payload

    async def send(self, body: Any) -> list[dict[str, Any]]:
        """A v2 send that must be accepted; returns its results."""
        status, payload = await self.post(V2, body)
        assert status == 202, payload
        assert payload["statusKey"] == "SUCCESS", payload
        results: list[dict[str, Any]] = payload["results"]
        return results

    async def stored_text(self, message_id: str) -> str:
        status, payload = await self.get(f"/api/v1/messages/{message_id}")
        assert status == 200, payload
        text: str = payload["data"]["message"].get("text", "")
        return text


@asynccontextmanager
async def api_for(db_url: str) -> AsyncIterator[tuple[Any, Api]]:
    async with running_hub(db_url) as hub, rest_session() as http:
        yield hub, Api(http, hub.http_port)


def error_fields(payload: dict[str, Any]) -> list[str]:
    return [e["field"] for e in payload.get("errors", [])]


async def check_rejections(api: Api, cases: list[tuple[str, Any, str]], path: str = V2) -> None:
    """Every case must be a 400 whose errors name exactly the expected field."""
    wrong: list[str] = []
    for name, body, field in cases:
        status, payload = await api.post(path, body)
        fields = error_fields(payload)
        if status != 400 or payload.get("statusKey") != "INVALID_ARGUMENT" or fields != [field]:
            wrong.append(f"{name}: expected 400 [{field!r}], got {status} {fields} {payload}")
    assert not wrong, "\n".join(wrong)


def accepted_all(results: list[dict[str, Any]]) -> bool:
    return bool(results) and all(r.get("messageId") and not r.get("error") for r in results)


# -- rejections: one table, one hub ------------------------------------------------------


def rejection_cases(now: datetime) -> list[tuple[str, Any, str]]:
    in_an_hour = now + timedelta(hours=1)
    in_two_hours = now + timedelta(hours=2)
    return [
        # 1. destinations
        ("no addresses", sms(to=[]), "to"),
        ("empty group only", sms(to=[{"msisdn": []}]), "to"),
        (
            "1001 addresses",
            sms(to=[{"msisdn": group} for group in split(uk_numbers(1001), 4)]),
            "to",
        ),
        (
            "invalid msisdn",
            sms(to=[{"msisdn": [UK]}, {"msisdn": [IN, "12345"]}]),
            "to[1].msisdn[1]",
        ),
        ("test-range msisdn", sms(to=[{"msisdn": ["+447700900123"]}]), "to[0].msisdn[0]"),
        ("letters msisdn", sms(to=[{"msisdn": ["CALLNOW"]}]), "to[0].msisdn[0]"),
        ("email on sms", sms(to=[{"msisdn": [UK]}, {"email": ["a@example.com"]}]), "to[1].email"),
        (
            "email beside msisdn on sms",
            sms(to=[{"msisdn": [UK], "email": ["a@example.com"]}]),
            "to[0].email",
        ),
        (
            "invalid email",
            email(to=[{"email": ["john.smith@example.com", "not-an-email"]}]),
            "to[0].email[1]",
        ),
        ("email without domain", email(to=[{"email": ["john@"]}]), "to[0].email[0]"),
        # 2. sendAt
        ("sendAt 8 days ahead", sms(sendAt=str(int(now.timestamp()) + 8 * 86400)), "sendAt"),
        ("sendAt 8 days ahead ISO", sms(sendAt=iso_z(now + timedelta(days=8))), "sendAt"),
        ("sendAt garbage", sms(sendAt="next tuesday"), "sendAt"),
        ("sendAt negative", sms(sendAt="-5"), "sendAt"),
        # 3. expiry
        ("expireAt and validity", sms(expireAt=iso_z(in_an_hour), validity=60), "validity"),
        (
            "expireAt before sendAt",
            sms(sendAt=iso_z(in_two_hours), expireAt=iso_z(in_an_hour)),
            "expireAt",
        ),
        ("expireAt in the past", sms(expireAt="2000-01-01T00:00:00Z"), "expireAt"),
        ("expireAt garbage", sms(expireAt="soon"), "expireAt"),
        ("negative validity", sms(validity=-5), "validity"),
        # 4. priority
        ("priority 4", sms(priority=4), "priority"),
        ("priority -1", sms(priority=-1), "priority"),
        ("priority '4'", sms(priority="4"), "priority"),
        # 5. content xor template
        ("content and template", sms(template={"id": "no-such-template"}), "template"),
        ("neither content nor template", without(sms(), "content"), "content"),
        ("empty content", sms(content={}), "content"),
        (
            "unknown template id",
            {**without(sms(), "content"), "template": {"id": "no-such-template"}},
            "template.id",
        ),
        # 6. per-channel content
        ("sms text 1025", sms_text("a" * 1025), "content.text"),
        ("sms html", sms(content={"type": "html", "text": "<b>hi</b>"}), "content.type"),
        ("sms without text", sms(content={"type": "text"}), "content.text"),
        ("rcs text 3073", rcs(type="text", text="r" * 3073), "content.text"),
        (
            "rcs 11 suggestions",
            rcs(type="text", text="pick", suggestions=suggestions(11)),
            "content.suggestions",
        ),
        (
            "rich card 5 suggestions",
            rcs(type="standalone", richCard=rich_card(5)),
            "content.richCard.suggestions",
        ),
        ("carousel card 3 suggestions", carousel(3, 1), "content.cards[0].suggestions"),
        ("carousel second card 3", carousel(2, 3), "content.cards[1].suggestions"),
        ("rcs agentEvent WAVE", rcs(type="agentEvent", event="WAVE"), "content.event"),
        ("rcs unknown type", rcs(type="hologram", text="x"), "content.type"),
        ("email html +1", email_content(html="h" * (350 * KIB + 1)), "content.html"),
        (
            "email multibyte html over limit",
            email_content(html="é" * (175 * KIB + 1)),
            "content.html",
        ),
        (
            "email attachments > 10 MiB",
            email_content(attachments=attachments(6 * MIB, 4 * MIB + 1)),
            "content.attachments",
        ),
        (
            "email attachment size as string",
            email_content(attachments=[{**attachments(0)[0], "size": "11000000"}]),
            "content.attachments",
        ),
        ("email without subject", email(content={"type": "text", "text": "hi"}), "content.subject"),
        (
            "email subject with CRLF",
            email(content={"type": "text", "subject": "Hi\r\nBcc: x@evil.example", "text": "x"}),
            "content.subject",
        ),
        ("email subject with LF", email_content(subject="Hi\nthere"), "content.subject"),
        ("email subject with CR", email_content(subject="Hi\rthere"), "content.subject"),
        (
            "email fromName with CRLF",
            email(options={"fromName": "Shop\r\nBcc: x@evil.example"}),
            "options.fromName",
        ),
        ("email fromName with LF", email(options={"fromName": "Shop\n"}), "options.fromName"),
        ("email type sms-only", email(content={"type": "unicode", "subject": "s"}), "content.type"),
        (
            "whatsapp image without url",
            whatsapp(type="image", text="look"),
            "content.mediaContentUrl",
        ),
        ("whatsapp text 4097", whatsapp(type="text", text="w" * 4097), "content.text"),
        # 7. requestedReceipts
        ("sms READ receipt", sms(requestedReceipts=["READ"]), "requestedReceipts[0]"),
        (
            "sms second receipt bad",
            sms(requestedReceipts=["DELIVERED", "opened"]),
            "requestedReceipts[1]",
        ),
        (
            "rcs bounced receipt",
            {**rcs(type="text", text="hi"), "requestedReceipts": ["bounced"]},
            "requestedReceipts[0]",
        ),
        # 8. notifyUrl
        ("notifyUrl ftp", sms(notifyUrl="ftp://x"), "notifyUrl"),
        ("notifyUrl relative", sms(notifyUrl="/hooks/cim"), "notifyUrl"),
        # other request-level checks
        ("unknown channel", sms(channel="fax"), "channel"),
        ("no from", without(sms(), "from"), "from"),
        ("bad cc", email(cc=["audit"]), "cc[0]"),
        # 10. JSON mapping
        ("unknown top-level field", sms(colour="blue"), "colour"),
        (
            "unknown nested field",
            sms(content={"type": "text", "text": "x", "font": 1}),
            "content.font",
        ),
        ("priority high", sms(priority="high"), "priority"),
        ("to as object", sms(to={}), "to"),
        ("msisdn as string", sms(to=[{"msisdn": UK}]), "to[0].msisdn"),
        ("validity as text", sms(validity="a minute"), "validity"),
    ]


async def test_invalid_batch_sends_are_400_naming_the_field(db_url: str) -> None:
    async with api_for(db_url) as (_hub, api):
        await check_rejections(api, rejection_cases(datetime.now(UTC)))


async def test_malformed_json_is_400(db_url: str) -> None:
    async with api_for(db_url) as (_hub, api):
        for path in (V2, V1):
            for raw in ('{"channel": "sms", ', "not json", "[1, 2", ""):
                status, payload = await api.post(path, raw)
                assert status == 400, (path, raw, payload)
                assert payload["statusKey"] == "INVALID_ARGUMENT", payload
        # Valid JSON that is not an object is a shape error, not a crash.
        for raw in ("[]", '"text"', "42", "null"):
            status, payload = await api.post(V2, raw)
            assert status == 400, (raw, payload)


async def test_invalid_single_sends_are_400_naming_the_field(db_url: str) -> None:
    base = seed("outbound_msg.json")
    cases: list[tuple[str, Any, str]] = [
        ("unknown field", {**base, "colour": "blue"}, "colour"),
        ("no channel", without(base, "channelId"), "channelId"),
        ("unknown channel", {**base, "channelId": "nope"}, "channelId"),
        ("no to", without(base, "to"), "to"),
        ("sms channel bad phone", {**base, "channelId": "sandbox-sms"}, "to.phone"),
        (
            "email channel bad email",
            {**base, "channelId": "sandbox-email", "to": {"email": "x@"}},
            "to.email",
        ),
        ("text without body", {**base, "text": {}}, "text.body"),
        ("unknown type", {**base, "type": "hologram"}, "type"),
    ]
    async with api_for(db_url) as (_hub, api):
        await check_rejections(api, cases, path=V1)


# -- accepted variants -------------------------------------------------------------------


def accepted_cases(now: datetime) -> list[tuple[str, dict[str, Any], str]]:
    """(name, body, expected status of every result)."""
    soon = now + timedelta(hours=1)
    ist = timezone(timedelta(hours=5, minutes=30))
    epoch_soon = int(soon.timestamp())
    return [
        # 2. sendAt forms all schedule the message
        ("sendAt ISO Z", sms(sendAt=iso_z(soon)), "SCHEDULED"),
        ("sendAt ISO offset", sms(sendAt=soon.astimezone(ist).isoformat()), "SCHEDULED"),
        ("sendAt epoch seconds", sms(sendAt=str(epoch_soon)), "SCHEDULED"),
        ("sendAt epoch seconds number", sms(sendAt=epoch_soon), "SCHEDULED"),
        ("sendAt epoch ms", sms(sendAt=str(epoch_soon * 1000)), "SCHEDULED"),
        ("sendAt 6 days ahead", sms(sendAt=iso_z(now + timedelta(days=6))), "SCHEDULED"),
        ("sendAt in the past sends now", sms(sendAt="2020-01-01T00:00:00Z"), "ACCEPTED"),
        # 3. expiry alone
        ("expireAt alone", sms(expireAt=iso_z(soon)), "ACCEPTED"),
        ("validity alone", sms(validity=3600), "ACCEPTED"),
        (
            "expireAt after sendAt",
            sms(sendAt=iso_z(soon), expireAt=iso_z(soon + timedelta(hours=1))),
            "SCHEDULED",
        ),
        # 4. priority
        ("priority absent", sms(), "ACCEPTED"),
        ("priority 0", sms(priority=0), "ACCEPTED"),
        ("priority 1", sms(priority=1), "ACCEPTED"),
        ("priority 2", sms(priority=2), "ACCEPTED"),
        ("priority 3", sms(priority=3), "ACCEPTED"),
        ("priority '2'", sms(priority="2"), "ACCEPTED"),
        # 6. boundaries that are still allowed
        ("sms text 1024", sms_text("a" * 1024), "ACCEPTED"),
        ("sms unicode 1024", sms(content={"type": "unicode", "text": "é" * 1024}), "ACCEPTED"),
        ("rcs text 3072", rcs(type="text", text="r" * 3072), "ACCEPTED"),
        (
            "rcs 10 suggestions",
            rcs(type="text", text="pick", suggestions=suggestions(10)),
            "ACCEPTED",
        ),
        ("rich card 4 suggestions", rcs(type="standalone", richCard=rich_card(4)), "ACCEPTED"),
        ("carousel 2 suggestions per card", carousel(2, 2, 0), "ACCEPTED"),
        ("rcs agentEvent IS_TYPING", rcs(type="agentEvent", event="IS_TYPING"), "ACCEPTED"),
        ("email html 350 KiB", email_content(html="h" * (350 * KIB)), "ACCEPTED"),
        (
            "email attachments exactly 10 MiB",
            email_content(attachments=attachments(6 * MIB, 4 * MIB)),
            "ACCEPTED",
        ),
        (
            "whatsapp image",
            whatsapp(type="image", mediaContentUrl="https://example.com/a.png"),
            "ACCEPTED",
        ),
        ("whatsapp text 4096", whatsapp(type="text", text="w" * 4096), "ACCEPTED"),
        # 7. receipts
        ("sms seed receipts", sms(requestedReceipts=["SENT", "DELIVERED", "Clicked"]), "ACCEPTED"),
        ("email bounced complaint", email(requestedReceipts=["bounced", "complaint"]), "ACCEPTED"),
        (
            "rcs read receipt",
            {**rcs(type="text", text="hi"), "requestedReceipts": ["READ"]},
            "ACCEPTED",
        ),
        # 8. notifyUrl
        ("notifyUrl https", sms(notifyUrl="https://hooks.example.com/cim"), "ACCEPTED"),
        # channel name is case-insensitive
        ("channel SMS", sms(channel="SMS"), "ACCEPTED"),
    ]


async def test_valid_batch_variants_are_accepted(db_url: str) -> None:
    async with api_for(db_url) as (_hub, api):
        wrong: list[str] = []
        for name, body, expected_status in accepted_cases(datetime.now(UTC)):
            status, payload = await api.post(V2, body)
            results = payload.get("results", [])
            if status != 202 or not accepted_all(results):
                wrong.append(f"{name}: expected 202 with messageIds, got {status} {payload}")
            elif {r.get("status") for r in results} != {expected_status}:
                wrong.append(f"{name}: expected {expected_status}, got {results}")
        assert not wrong, "\n".join(wrong)


async def test_scheduled_message_is_stored_as_scheduled(db_url: str) -> None:
    soon = datetime.now(UTC) + timedelta(hours=2)
    async with api_for(db_url) as (_hub, api):
        [result] = await api.send(sms(sendAt=iso_z(soon)))
        assert result["status"] == "SCHEDULED"
        status, payload = await api.get(f"/api/v1/messages/{result['messageId']}")
        assert status == 200
        assert payload["data"]["message"]["status"] == "SCHEDULED"


# -- destinations ------------------------------------------------------------------------


async def test_destination_limit_and_e164_normalisation(db_url: str) -> None:
    async with api_for(db_url) as (_hub, api):
        groups = [
            {"msisdn": part, "correlationId": f"g{i}"}
            for i, part in enumerate(split(uk_numbers(1000), 4))
        ]
        results = await api.send(sms(to=groups))
        assert len(results) == 1000
        assert accepted_all(results)
        assert [r["destination"] for r in results] == e164_uk(1000)
        assert [r.get("correlationId") for r in results] == [f"g{i // 250}" for i in range(1000)]
        assert len({r["messageId"] for r in results}) == 1000

        results = await api.send(
            sms(
                to=[
                    {"msisdn": ["919988776655", "+44 7911 123456"]},
                    {"msisdn": ["+91 99887 76655", " 447911123456 "]},
                ]
            )
        )
        assert [r["destination"] for r in results] == [IN, UK, IN, UK]
        assert accepted_all(results)

        results = await api.send(email(to=[{"email": ["jane.doe@Example.COM"]}]))
        assert results[0]["destination"] == "jane.doe@example.com"

        # The stored message carries the normalised address too.
        status, payload = await api.get(f"/api/v1/messages/{results[0]['messageId']}")
        assert status == 200
        assert payload["data"]["message"]["destination"] == "jane.doe@example.com"


# -- substitutions -----------------------------------------------------------------------


async def test_substitutions(db_url: str) -> None:
    async with api_for(db_url) as (hub, api):
        # Destination values win over global ones; globals fill the rest.
        results = await api.send(
            sms(
                to=[
                    {"msisdn": [UK], "correlationId": "local", "substitutions": {"name": "Ann"}},
                    {"msisdn": [IN], "correlationId": "global"},
                ],
                substitutions={"name": "Everyone", "value": "42"},
                content={"type": "text", "text": "Hi $(name), you have $(value)"},
            )
        )
        assert accepted_all(results)
        texts = [await api.stored_text(r["messageId"]) for r in results]
        assert texts == ["Hi Ann, you have 42", "Hi Everyone, you have 42"]

        # A missing variable fails only the destinations that lack it.
        results = await api.send(
            sms(
                to=[
                    {"msisdn": [UK], "correlationId": "has", "substitutions": {"area": "EC1M"}},
                    {"msisdn": [IN, "+447911123457"], "correlationId": "lacks"},
                ],
                content={"type": "text", "text": "Outage in $(area)"},
            )
        )
        assert [r["destination"] for r in results] == [UK, IN, "+447911123457"]
        ok, *failed = results
        assert ok["messageId"] and not ok.get("error")
        assert await api.stored_text(ok["messageId"]) == "Outage in EC1M"
        for r in failed:
            assert r.get("correlationId") == "lacks"
            assert not r.get("messageId"), r
            assert "area" in r["error"], r

        # $(unsubscribe) is supplied by the platform for email: a mailto: link.
        results = await api.send(
            email(content={"type": "text", "subject": "Hi", "text": "Leave: $(unsubscribe)"})
        )
        assert accepted_all(results)
        assert (
            await api.stored_text(results[0]["messageId"])
            == "Leave: mailto:offers@brand.example.org?subject=unsubscribe"
        )

        body = seed("v2_email.json")
        results = await api.send(body)
        assert accepted_all(results)
        for r in results:
            stored = await hub.store.messages.get_message(DEFAULT_TENANT, r["messageId"])
            html = stored.content["html"]
            assert "$(unsubscribe)" not in html
            assert "href='mailto:offers@brand.example.org?subject=unsubscribe'" in html


# -- seeds -------------------------------------------------------------------------------


async def test_seeds_are_accepted(db_url: str) -> None:
    async with api_for(db_url) as (_hub, api):
        status, payload = await api.post(V1, seed("outbound_msg.json"))
        assert status == 200, payload
        assert payload["data"]["messageId"], payload

        # The sms seed masks its number with letters, which are never read as
        # keypad digits; with the mask filled in, it is sent.
        masked = seed("v2_sms.json")
        status, payload = await api.post(V2, masked)
        assert status == 400, payload
        assert "to[0].msisdn[0]" in payload["message"], payload
        masked["to"][0]["msisdn"] = ["919699999999"]
        # The sms seed uses $(area) without defining it: a per-destination error.
        [result] = await api.send(masked)
        assert not result.get("messageId"), result
        assert "area" in result["error"], result

        results = await api.send(seed("v2_email.json"))
        assert len(results) == 3
        assert accepted_all(results)
        assert [r["destination"] for r in results] == [
            "john.smith@example.com",
            "jane.doe@example.com",
            "sam.jones@example.com",
        ]

        [result] = await api.send(seed("v2_rcs.json"))
        assert result["messageId"], result
        assert result["correlationId"] == "na1b2b1i1"
        assert result["destination"] == "+916304451252"


# -- known product bug: far-future expiry overflows the database column ----------------


def _overflowing_expiry() -> list[tuple[str, dict[str, Any], str]]:
    return [
        # 2**62 fits int64 (so the JSON mapping accepts it), but *1000 ms does not.
        ("validity 2**62 s", sms(validity=2**62), "validity"),
        ("validity 1e16 s", sms(validity=10**16), "validity"),
        ("validity 31 days", sms(validity=31 * 24 * 3600), "validity"),
        ("expireAt 25-digit epoch", sms(expireAt="9" * 25), "expireAt"),
    ]


async def test_far_future_expiry_is_a_400_not_a_500(db_url: str) -> None:
    async with api_for(db_url) as (_hub, api):
        wrong: list[str] = []
        for name, body, field in _overflowing_expiry():
            async with api.http.post(api.base + V2, json=body) as resp:
                payload = await resp.json(content_type=None)
            fields = [e.get("field") for e in payload.get("errors", [])]
            if resp.status != 400 or fields != [field]:
                wrong.append(f"{name}: {resp.status} {fields}")
        assert not wrong, "\n".join(wrong)


async def test_line_breaks_in_email_headers_are_refused_over_grpc(db_url: str) -> None:
    def batch(subject: str, from_name: str) -> m.SendBatchRequest:
        return m.SendBatchRequest(
            channel="email",
            from_address="offers@brand.example.org",
            to=[m.BatchDestination(email=["john.smith@example.com"])],
            content=m.BatchContent(type="text", subject=subject, text="hello"),
            options=m.BatchOptions(from_name=from_name),
        )

    cases = [
        (batch("Hi\r\nBcc: x@evil.example", "Shop"), ["content.subject"]),
        (batch("Hi", "Shop\nBcc: x@evil.example"), ["options.fromName"]),
        (batch("Hi\r", "Shop\r"), ["content.subject", "options.fromName"]),
    ]
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        for request, fields in cases:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SendBatch(request)
            status = rpc_status.from_call(caught.value)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            found = []
            for detail in status.details if status else ():
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    found.extend(v.field for v in bad.field_violations)
            assert sorted(found) == fields
        # The same fields on one line are sent.
        sent = await stub.SendBatch(batch("Hi there", "Shop"))
        assert sent.results[0].message_id


async def test_a_thousand_bad_numbers_get_a_status_a_client_can_read(db_url: str) -> None:
    # A status rides in trailers, which a default client refuses past 8 KiB:
    # listing all thousand violations turned INVALID_ARGUMENT into the
    # client's own RESOURCE_EXHAUSTED, naming none of them.
    bad = [f"+999{i:07d}" for i in range(1000)]
    batch = m.SendBatchRequest(
        channel="sms",
        from_address="CNNECT",
        to=[m.BatchDestination(msisdn=bad)],
        content=m.BatchContent(type="text", text="hello"),
    )
    async with api_for(db_url) as (hub, api), channel_to(hub) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mg.MessagingServiceStub(channel).SendBatch(batch)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(caught.value)
        assert status is not None
        listed: list[str] = []
        counts: dict[str, str] = {}
        for detail in status.details:
            request, info = error_details_pb2.BadRequest(), error_details_pb2.ErrorInfo()
            if detail.Unpack(request):
                listed.extend(v.field for v in request.field_violations)
            elif detail.Unpack(info):
                counts = dict(info.metadata)
        # The first violations, in order, and how many there were in all.
        assert 10 <= len(listed) < 1000
        assert listed == [f"to[0].msisdn[{i}]" for i in range(len(listed))]
        assert counts == {"violationCount": "1000", "violationsListed": str(len(listed))}
        message = caught.value.details() or ""
        assert message.startswith("to[0].msisdn[0]: ") and message.endswith(" more")
        assert len(message) < 400

        # The façade answers the same, as a 400 naming the fields.
        status_code, payload = await api.post(V2, sms(to=[{"msisdn": bad}]))
        assert status_code == 400
        assert error_fields(payload) == listed
        assert payload["message"] == message

        # A few bad numbers are all listed, with no count beside them.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mg.MessagingServiceStub(channel).SendBatch(
                m.SendBatchRequest(
                    channel="sms",
                    from_address="CNNECT",
                    to=[m.BatchDestination(msisdn=[UK, *bad[:3]])],
                    content=m.BatchContent(type="text", text="hello"),
                )
            )
        status = rpc_status.from_call(caught.value)
        assert status is not None
        few: list[str] = []
        for detail in status.details:
            request, info = error_details_pb2.BadRequest(), error_details_pb2.ErrorInfo()
            if detail.Unpack(request):
                few.extend(v.field for v in request.field_violations)
            elif detail.Unpack(info):
                assert "violationCount" not in info.metadata
        assert few == ["to[0].msisdn[1]", "to[0].msisdn[2]", "to[0].msisdn[3]"]
        assert (caught.value.details() or "").count("not a phone number") == 3
