"""Rendering cost is bounded, and phone numbers are never spelled with keypad letters.

Every table runs over REST and gRPC against a real hub on both engines. A
refusal must be a 400 / INVALID_ARGUMENT naming exactly one field, store
nothing, and leave the hub healthy.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from server.api.context import DEFAULT_TENANT
from server.domain.limits import (
    EMAIL_BODY_MAX_BYTES,
    RCS_TEXT_MAX,
    RENDER_BUDGET_BYTES,
    SMS_SEGMENTS_MAX,
    SUBSTITUTION_VALUE_MAX,
    WHATSAPP_TEXT_MAX,
)
from server.domain.paging import MESSAGES
from server.domain.sms_encoding import segments
from server.domain.substitution import TooLong, render_text
from server.gateway import jsonmap
from support.hub import channel_to, rest_session, running_hub

UK = "+447911123456"
IN = "+919988776655"
BATCH, SINGLE = "/api/v2/message/send", "/api/v1/message/send"
TRANSPORTS = ("rest", "grpc")
# 2,000 characters named 1,000 times: 2 MB from a request of a few kilobytes.
BIG = "x" * 2000
BIG_TEXT = "$(b)" * 1000


def batch(channel: str, text: str, *, to: list[dict[str, Any]] | None = None, **vars: str) -> Any:
    sender = {"sms": "CNNECT", "email": "offers@brand.example.org", "whatsapp": "wa-app"}
    content: dict[str, Any] = {"type": "text", "text": text}
    if channel == "email":
        content["subject"] = "Hello"
        to = to or [{"email": ["john.smith@example.com"]}]
    body: dict[str, Any] = {
        "channel": channel,
        "from": sender.get(channel, "a_156887855308557980"),
        "to": to or [{"msisdn": [IN if channel == "rcs" else UK]}],
        "content": content,
    }
    if vars:
        body["substitutions"] = vars
    return body


def single(text: str, phone: str = UK) -> dict[str, Any]:
    return {
        "channelId": "sandbox-sms",
        "type": "text",
        "to": {"phone": phone},
        "text": {"body": text},
    }


def emails(count: int) -> list[dict[str, Any]]:
    return [{"email": [f"user{i}@example.com"]} for i in range(count)]


class Client:
    """One send call over either transport: (ok, fields refused, per-destination results)."""

    def __init__(self, hub: Any, transport: str, http: aiohttp.ClientSession, stub: Any) -> None:
        self.hub, self.transport, self.http, self.stub = hub, transport, http, stub

    async def send(self, path: str, body: Any) -> tuple[bool, list[str], list[dict[str, Any]]]:
        if self.transport == "rest":
            return await self._rest(path, body)
        return await self._grpc(path, body)

    async def _rest(self, path: str, body: Any) -> tuple[bool, list[str], list[dict[str, Any]]]:
        url = f"http://127.0.0.1:{self.hub.http_port}{path}"
        async with self.http.post(url, data=json.dumps(body)) as resp:
            payload = await resp.json(content_type=None)
        assert resp.status < 500, payload
        if resp.status == 400:
            assert payload["statusKey"] == "INVALID_ARGUMENT", payload
            return False, [e["field"] for e in payload.get("errors", [])], []
        assert resp.status == (200 if path == SINGLE else 202), payload
        return True, [], list(payload.get("results", [payload]))

    async def _grpc(self, path: str, body: Any) -> tuple[bool, list[str], list[dict[str, Any]]]:
        try:
            if path == BATCH:
                reply = await self.stub.SendBatch(jsonmap.parse(body, m.SendBatchRequest))
                results = [{"messageId": r.message_id, "error": r.error} for r in reply.results]
            else:
                sent = await self.stub.SendMessage(jsonmap.parse(body, m.SendMessageRequest))
                results = [{"messageId": sent.message_id}]
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
            return False, _violations(err), []
        return True, [], results

    async def stored(self) -> int:
        count, token = 0, ""
        while True:
            page = await self.hub.store.messages.list_messages(
                DEFAULT_TENANT, page=MESSAGES.request(DEFAULT_TENANT, 500, token)
            )
            count += len(page.items)
            token = page.next_token
            if not token:
                return count

    async def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.hub.http_port}/healthz"
        async with self.http.get(url) as resp:
            return resp.status == 200


def _violations(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    fields: list[str] = []
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR) and detail.Unpack(bad):
            fields.extend(v.field for v in bad.field_violations)
    return fields


@asynccontextmanager
async def client_for(db_url: str, transport: str) -> AsyncIterator[Client]:
    async with (
        running_hub(db_url) as hub,
        rest_session(headers={"Content-Type": "application/json"}) as http,
        channel_to(hub) as channel,
    ):
        yield Client(hub, transport, http, mg.MessagingServiceStub(channel))


async def config(client: Client, path: str, body: Any) -> None:
    url = f"http://127.0.0.1:{client.hub.http_port}{path}"
    async with client.http.post(url, data=json.dumps(body)) as resp:
        assert resp.status in (200, 201), (path, resp.status)


async def check_refusals(client: Client, cases: list[tuple[str, str, Any, str]]) -> None:
    wrong: list[str] = []
    for name, path, body, field in cases:
        before = await client.stored()
        ok, fields, _ = await client.send(path, body)
        after = await client.stored()
        if ok or fields != [field] or after != before:
            wrong.append(
                f"{name}: expected 400 [{field!r}], got ok={ok} {fields}, {after - before} stored"
            )
        if not await client.healthy():
            wrong.append(f"{name}: /healthz not 200 afterwards")
    assert not wrong, "\n".join(wrong)


# -- past a cap: 400 naming the field, nothing stored -------------------------------------


def _ucs2(units: int) -> str:
    return "ж" * units


def refusal_cases() -> list[tuple[str, str, Any, str]]:
    gsm_11 = "a" * 766  # twice over: 1532 septets, 11 segments
    ucs2_11 = _ucs2(340)  # twice over: 680 code units, 11 segments
    per_email = "e" * SUBSTITUTION_VALUE_MAX
    email_body = "$(v)" * (EMAIL_BODY_MAX_BYTES // SUBSTITUTION_VALUE_MAX)  # exactly at the cap
    budget_destinations = RENDER_BUDGET_BYTES // EMAIL_BODY_MAX_BYTES + 1
    return [
        ("2000 x 1000 on email", BATCH, batch("email", BIG_TEXT, b=BIG), "content.text"),
        (
            "2000 x 1000 from one destination's values",
            BATCH,
            batch(
                "email",
                BIG_TEXT,
                b="s",
                to=[*emails(3), {"email": ["last@example.com"], "substitutions": {"b": BIG}}],
            ),
            "to[3]",
        ),
        ("sms gsm-7 past 10 segments", BATCH, batch("sms", "$(v)$(v)", v=gsm_11), "content.text"),
        ("sms ucs-2 past 10 segments", BATCH, batch("sms", "$(v)$(v)", v=ucs2_11), "content.text"),
        ("sms past 1600 characters", BATCH, batch("sms", "$(big)", big=BIG), "content.text"),
        (
            "whatsapp past 4096",
            BATCH,
            batch("whatsapp", "$(v)$(v)", v="w" * (WHATSAPP_TEXT_MAX // 2 + 1)),
            "content.text",
        ),
        (
            "rcs past 3072",
            BATCH,
            batch("rcs", "$(v)$(v)", v="r" * (RCS_TEXT_MAX // 2 + 1)),
            "content.text",
        ),
        (
            "email past its cap",
            BATCH,
            batch("email", email_body + "!", v=per_email),
            "content.text",
        ),
        (
            "each destination fits, the request does not",
            BATCH,
            batch("email", email_body, v=per_email, to=emails(budget_destinations)),
            "to",
        ),
        (
            "single send past its cap from global variables",
            SINGLE,
            single("$(big)$(big)"),
            "text.body",
        ),
        ("single sms past 10 segments as written", SINGLE, single("a" * 1531), "text.body"),
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_renderings_past_a_cap_are_refused_and_store_nothing(
    db_url: str, transport: str
) -> None:
    async with client_for(db_url, transport) as client:
        # Global variables fill single sends: a 4,096-character one named twice.
        await config(client, "/api/v1/config/global/vars", {"key": "big", "value": "g" * 4096})
        await check_refusals(client, refusal_cases())


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_template_that_multiplies_a_variable_is_refused(
    db_url: str, transport: str
) -> None:
    async with client_for(db_url, transport) as client:
        await config(
            client,
            "/api/v1/config/tmpl/hsm",
            {
                "code": "BLOWUP",
                "lang": "en",
                "category": "UTILITY",
                "body": BIG_TEXT,
                "approved": [{"channelId": "sandbox-sms", "status": "APPROVED"}],
            },
        )
        body = {
            "channel": "sms",
            "from": "CNNECT",
            "to": [{"msisdn": [UK]}],
            "substitutions": {"b": BIG},
            "template": {"code": "BLOWUP"},
        }
        await check_refusals(client, [("template 2000 x 1000", BATCH, body, "template")])


# -- at a cap: accepted --------------------------------------------------------------------


def at_cap_cases() -> list[tuple[str, Any, int]]:
    """(name, batch, rendered size in the channel's unit) for messages exactly at their cap."""
    gsm = "a" * 765  # twice over: 1530 septets, 10 segments
    ucs2 = _ucs2(335)  # twice over: 670 code units, 10 segments
    per_email = "e" * SUBSTITUTION_VALUE_MAX
    email_body = "$(v)" * (EMAIL_BODY_MAX_BYTES // SUBSTITUTION_VALUE_MAX)
    return [
        ("sms gsm-7 at 10 segments", batch("sms", "$(v)$(v)", v=gsm), segments(gsm * 2)),
        ("sms ucs-2 at 10 segments", batch("sms", "$(v)$(v)", v=ucs2), segments(ucs2 * 2)),
        (
            "whatsapp at 4096",
            batch("whatsapp", "$(v)$(v)", v="w" * (WHATSAPP_TEXT_MAX // 2)),
            WHATSAPP_TEXT_MAX,
        ),
        ("rcs at 3072", batch("rcs", "$(v)$(v)", v="r" * (RCS_TEXT_MAX // 2)), RCS_TEXT_MAX),
        ("email at its cap", batch("email", email_body, v=per_email), EMAIL_BODY_MAX_BYTES),
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_message_exactly_at_its_cap_is_accepted(db_url: str, transport: str) -> None:
    cases = at_cap_cases()
    assert [size for _, _, size in cases[:2]] == [SMS_SEGMENTS_MAX, SMS_SEGMENTS_MAX]
    async with client_for(db_url, transport) as client:
        wrong: list[str] = []
        for name, body, _size in cases:
            before = await client.stored()
            ok, fields, results = await client.send(BATCH, body)
            stored = await client.stored() - before
            if not ok or stored != 1 or any(r.get("error") for r in results):
                wrong.append(f"{name}: ok={ok} {fields} {results} {stored} stored")
        assert not wrong, "\n".join(wrong)
        assert await client.healthy()


# -- phone numbers with letters -------------------------------------------------------------


def letter_cases() -> list[tuple[str, str, Any, str]]:
    return [
        (
            "batch +1800FLOWERS",
            BATCH,
            batch("sms", "hi", to=[{"msisdn": ["+1800FLOWERS"]}]),
            "to[0].msisdn[0]",
        ),
        (
            "batch +44 7911 ABC123 second in its group",
            BATCH,
            batch("sms", "hi", to=[{"msisdn": [UK]}, {"msisdn": [IN, "+44 7911 ABC123"]}]),
            "to[1].msisdn[1]",
        ),
        (
            "batch 1-800-FLOWERS on whatsapp",
            BATCH,
            batch("whatsapp", "hi", to=[{"msisdn": ["1-800-FLOWERS"]}]),
            "to[0].msisdn[0]",
        ),
        ("single +1800FLOWERS", SINGLE, single("hi", "+1800FLOWERS"), "to.phone"),
        ("single +44 7911 ABC123", SINGLE, single("hi", "+44 7911 ABC123"), "to.phone"),
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_phone_numbers_with_letters_are_refused(db_url: str, transport: str) -> None:
    async with client_for(db_url, transport) as client:
        await check_refusals(client, letter_cases())
        # The usual ways of writing a number, extension included, still go through.
        for phone in ("+44 (7911) 123-456", "+44.7911.123456", "+447911123456 ext. 12"):
            ok, fields, _ = await client.send(SINGLE, single("hi", phone))
            assert ok, (phone, fields)
        assert await client.healthy()


# -- rendering stops at the cap ---------------------------------------------------------------


class CountingValues(dict[str, str]):
    """Values that count how often the renderer reads one."""

    reads = 0

    def __getitem__(self, key: str) -> str:
        self.reads += 1
        return super().__getitem__(key)


def test_rendering_stops_at_the_first_value_past_the_cap() -> None:
    values = CountingValues(b=BIG)
    with pytest.raises(TooLong):
        render_text(BIG_TEXT, values, limit=EMAIL_BODY_MAX_BYTES)
    # 262 copies of 2,000 characters pass 524,288; the other 738 are never read.
    assert values.reads == EMAIL_BODY_MAX_BYTES // len(BIG) + 1
