"""A NUL or an over-long string is a 400 naming the field, on every route and engine.

PostgreSQL refuses NUL in text and in jsonb, and text longer than a varchar
column, so before the field guard such input reached the database and came back
as a 500. Each case is sent over REST and over gRPC, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from fakes.twilio import FakeTwilio
from server.config import DEFAULT_CHANNELS
from server.domain.models import Channel
from server.gateway.routes import Route, build_routes
from support.hub import channel_to, rest_session
from support.inbound import TOKEN, contact, inbound_hub, row_counts

NUL = "a\u0000b"
Body = Callable[[str], Any]


@dataclass(frozen=True)
class Case:
    name: str
    verb: str
    # The URL; "{v}" is replaced by the bad value, URL-encoded.
    path: str
    rpc: str
    # The REST body for a value, and the gRPC request as proto JSON (the body when None).
    body: Body | None
    field: str
    limit: int | None
    request: Body | None = None


def _send_v1(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {
        "channelId": "sandbox",
        "type": "text",
        "to": {"phone": "+447700900123"},
        "text": {"body": text},
        **extra,
    }


def _grpc_v1(body: dict[str, Any]) -> dict[str, Any]:
    # Proto JSON spells the enum in full where the REST façade takes the short name.
    return {**body, "type": "OUTBOUND_MESSAGE_TYPE_TEXT"}


def _send_v2(**extra: Any) -> dict[str, Any]:
    return {
        "channel": "sms",
        "from": "CNNECT",
        "to": [{"msisdn": ["+447911100001"]}],
        "content": {"type": "text", "text": "hi"},
        **extra,
    }


def _receive(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "messages": [{"id": "m1", "from": "+447700900123", "type": "text", **message}],
        "contacts": [contact()],
    }


def _activity(customer: str, sender: str = "APP") -> dict[str, Any]:
    return {
        "header": {"sender": {"id": "crm", "type": sender}, "customer": {"id": customer}},
        "body": {"plain": {"markdownText": "x"}},
    }


CASES = [
    Case(
        "send text",
        "POST",
        "/api/v1/message/send",
        "MessagingService/SendMessage",
        _send_v1,
        "text.body",
        4096,
        request=lambda v: _grpc_v1(_send_v1(v)),
    ),
    Case(
        "send idempotency key field",
        "POST",
        "/api/v1/message/send",
        "MessagingService/SendMessage",
        lambda v: _send_v1(requestId=v),
        "requestId",
        256,
        request=lambda v: _grpc_v1(_send_v1(requestId=v)),
    ),
    Case(
        "batch correlation id",
        "POST",
        "/api/v2/message/send",
        "MessagingService/SendBatch",
        lambda v: _send_v2(to=[{"msisdn": ["+447911100001"], "correlationId": v}]),
        "to[0].correlationId",
        256,
    ),
    Case(
        "batch address",
        "POST",
        "/api/v2/message/send",
        "MessagingService/SendBatch",
        lambda v: _send_v2(to=[{"msisdn": ["+447911100001", v]}]),
        "to[0].msisdn[1]",
        320,
    ),
    Case(
        "batch substitution value",
        "POST",
        "/api/v2/message/send",
        "MessagingService/SendBatch",
        lambda v: _send_v2(substitutions={"name": v}),
        "substitutions.name",
        4096,
    ),
    Case(
        "template body",
        "POST",
        "/api/v1/config/tmpl/hsm",
        "ConfigService/CreateTemplate",
        lambda v: {"code": "greet", "lang": "en", "body": v},
        "body",
        4096,
        request=lambda v: {"template": {"code": "greet", "lang": "en", "body": v}},
    ),
    Case(
        "variable value",
        "POST",
        "/api/v1/config/global/vars",
        "ConfigService/SetGlobalVar",
        lambda v: {"key": "brand", "value": v},
        "value",
        4096,
    ),
    Case(
        "variable description",
        "POST",
        "/api/v1/config/global/vars",
        "ConfigService/SetGlobalVar",
        lambda v: {"key": "brand", "value": "x", "description": v},
        "description",
        4096,
    ),
    Case(
        "channel name",
        "POST",
        "/api/v1/config/channels",
        "ConfigService/CreateChannel",
        lambda v: {"channelId": "c-new", "contactType": "SMS", "provider": "sandbox", "name": v},
        "name",
        128,
        request=lambda v: {
            "channel": {
                "channelId": "c-new",
                "contactType": "SMS",
                "provider": "sandbox",
                "name": v,
            }
        },
    ),
    Case(
        "channel settings",
        "POST",
        "/api/v1/config/channels",
        "ConfigService/CreateChannel",
        lambda v: {
            "channelId": "c-new",
            "contactType": "SMS",
            "provider": "sandbox",
            "settings": {"nested": {"from": v}},
        },
        "settings.nested.from",
        None,
        request=lambda v: {
            "channel": {
                "channelId": "c-new",
                "contactType": "SMS",
                "provider": "sandbox",
                "settings": {"nested": {"from": v}},
            }
        },
    ),
    Case(
        "contact prefs",
        "POST",
        "/api/v1/contact/prefs/lang",
        "CustomerService/UpdateContactPrefs",
        lambda v: {"contactId": v, "lang": "en"},
        "contactId",
        256,
    ),
    Case(
        "data push id",
        "POST",
        "/api/v1/data/push",
        "CustomerService/PushData",
        lambda v: {"id": v, "type": "order", "data": {}},
        "id",
        256,
    ),
    Case(
        "data push customer data",
        "POST",
        "/api/v1/data/push",
        "CustomerService/PushData",
        lambda v: {"id": "o1", "type": "order", "data": {"lines": [{"sku": v}]}},
        "data.lines[0].sku",
        None,
    ),
    Case(
        "event push name",
        "POST",
        "/api/v1/event/push",
        "CustomerService/PushEvent",
        lambda v: {"eventName": v, "id": "e1"},
        "eventName",
        128,
    ),
    Case(
        "event push link",
        "POST",
        "/api/v1/event/push",
        "CustomerService/PushEvent",
        lambda v: {"eventName": "E", "id": "e1", "links": [{"linkValue": v}]},
        "links[0].linkValue",
        256,
    ),
    Case(
        "session routing queue",
        "POST",
        "/api/v1/session/routing",
        "SessionService/RouteSession",
        lambda v: {"sessionId": "s1", "queue": v},
        "queue",
        128,
    ),
    Case(
        "session routing skill",
        "POST",
        "/api/v1/session/routing",
        "SessionService/RouteSession",
        lambda v: {"sessionId": "s1", "skills": ["a", v]},
        "skills[1]",
        128,
    ),
    Case(
        "inbound message id",
        "POST",
        "/api/v1/message/receive",
        "MessagingService/ReceiveMessages",
        lambda v: _receive({"id": v, "text": {"body": "hi"}}),
        "messages[0].id",
        256,
    ),
    Case(
        "inbound text",
        "POST",
        "/api/v1/message/receive",
        "MessagingService/ReceiveMessages",
        lambda v: _receive({"text": {"body": v}}),
        "messages[0].text.body",
        4096,
    ),
    Case(
        "inbound original message",
        "POST",
        "/api/v1/message/receive",
        "MessagingService/ReceiveMessages",
        lambda v: _receive({"text": {"body": "hi"}, "originalMessage": {"raw": v}}),
        "messages[0].originalMessage.raw",
        None,
    ),
    Case(
        "inbound contact lane",
        "POST",
        "/api/v1/contact/info",
        "MessagingService/UpdateContactInfo",
        lambda v: {"contactId": "c1", "channelId": "sandbox", "lane": v},
        "contact.lane",
        320,
        request=lambda v: {"contact": {"contactId": "c1", "channelId": "sandbox", "lane": v}},
    ),
    Case(
        "activity customer",
        "POST",
        "/api/v1/conversation/activities",
        "SessionService/PushActivity",
        lambda v: _activity(v),
        "activity.header.customer.id",
        256,
        request=lambda v: {"activity": _activity(v, "SENDER_TYPE_APP")},
    ),
    Case(
        "message list query",
        "GET",
        "/api/v1/messages?correlationId={v}",
        "MessagingService/ListMessages",
        None,
        "correlationId",
        256,
        request=lambda v: {"correlationId": v},
    ),
    Case(
        "contact path",
        "GET",
        "/api/v1/contacts/{v}",
        "CustomerService/GetContact",
        None,
        "contactId",
        256,
        request=lambda v: {"contactId": v},
    ),
]
BAD_VALUES = [
    (case, kind)
    for case in CASES
    for kind in ("nul", "long")
    if kind == "nul" or case.limit is not None
]
_ROUTES: dict[str, Route] = {r.method_full_path: r for r in build_routes()}


def _value(case: Case, kind: str) -> str:
    return NUL if kind == "nul" else "x" * (int(case.limit or 0) + 1)


async def _rest(hub: Any, case: Case, value: str) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{hub.http_port}{case.path.replace('{v}', quote(value, safe=''))}"
    body = case.body(value) if case.body is not None else None
    async with (
        rest_session(headers={"x-verify-token": TOKEN}) as http,
        http.request(case.verb, url, json=body) as resp,
    ):
        return resp.status, await resp.json()


async def _grpc(hub: Any, case: Case, value: str) -> tuple[grpc.StatusCode, list[str]]:
    route = _ROUTES[f"/cim.v1.{case.rpc}"]
    build = case.request or case.body
    assert build is not None
    request = json_format.ParseDict(build(value), route.request_cls())
    async with channel_to(hub) as channel:
        call = channel.unary_unary(
            route.method_full_path,
            request_serializer=route.request_cls.SerializeToString,
            response_deserializer=route.response_cls.FromString,
        )
        try:
            await call(request, metadata=[("x-verify-token", TOKEN)])
        except grpc.aio.AioRpcError as err:
            return err.code(), _violations(err)
    return grpc.StatusCode.OK, []


def _violations(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    fields: list[str] = []
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields.extend(v.field for v in bad.field_violations)
    return fields


async def _healthz(hub: Any) -> int:
    async with (
        rest_session() as http,
        http.get(f"http://127.0.0.1:{hub.http_port}/healthz") as resp,
    ):
        return resp.status


@pytest.mark.parametrize(("case", "kind"), BAD_VALUES, ids=[f"{c.name}-{k}" for c, k in BAD_VALUES])
async def test_a_nul_or_overlong_string_is_400_naming_the_field(
    db_url: str, case: Case, kind: str
) -> None:
    value = _value(case, kind)
    async with inbound_hub(db_url) as hub:
        status, reply = await _rest(hub, case, value)
        code, fields = await _grpc(hub, case, value)
        health = await _healthz(hub)
    assert status == 400, reply
    assert reply["messageKey"] == "VALIDATION_FAILED", reply
    assert case.field in [e["field"] for e in reply["errors"]], reply
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, fields)
    assert case.field in fields, fields
    assert health == 200


async def test_an_overlong_idempotency_key_header_is_400(db_url: str) -> None:
    send = {
        "channelId": "sandbox",
        "type": "text",
        "to": {"phone": "+447700900123"},
        "text": {"body": "hi"},
    }
    async with inbound_hub(db_url) as hub:
        base = f"http://127.0.0.1:{hub.http_port}"
        async with rest_session() as http:
            too_long = {"Idempotency-Key": "k" * 257}
            async with http.post(f"{base}/api/v1/message/send", json=send, headers=too_long) as r:
                refused = (r.status, await r.json())
            longest = {"Idempotency-Key": "k" * 256}
            async with http.post(f"{base}/api/v1/message/send", json=send, headers=longest) as r:
                accepted = (r.status, await r.json())
        health = await _healthz(hub)
    assert refused[0] == 400, refused
    assert [e["field"] for e in refused[1]["errors"]] == ["Idempotency-Key"]
    assert accepted[0] == 200, accepted
    assert health == 200


async def test_a_webhook_without_its_token_is_401_even_with_a_bad_payload(db_url: str) -> None:
    async with inbound_hub(db_url) as hub, rest_session() as http:
        url = f"http://127.0.0.1:{hub.http_port}/api/v1/message/receive"
        body = _receive({"text": {"body": NUL}})
        async with http.post(url, json=body) as resp:
            status, reply = resp.status, await resp.json()
    assert status == 401, reply
    assert reply["messageKey"] == "INVALID_VERIFY_TOKEN"


async def test_the_longest_addresses_and_contact_ids_are_sent(db_url: str) -> None:
    # 254 characters, the longest address RFC 5321 allows; events once had room for 128.
    email = "a" * 64 + "@" + ("b" * 63 + ".") * 2 + "c" * 57 + ".com"
    assert len(email) == 254
    batch = {
        "channel": "email",
        "from": "sandbox-email",
        "to": [{"email": [email]}],
        "content": {"type": "text", "text": "hi", "subject": "s"},
    }
    single = _send_v1(to={"contactId": "c" * 256})
    async with inbound_hub(db_url) as hub, rest_session() as http:
        base = f"http://127.0.0.1:{hub.http_port}"
        async with http.post(f"{base}/api/v2/message/send", json=batch) as resp:
            batch_reply = (resp.status, await resp.json())
        async with http.post(f"{base}/api/v1/message/send", json=single) as resp:
            single_reply = (resp.status, await resp.json())
        health = await _healthz(hub)
    assert batch_reply[0] == 202, batch_reply
    assert single_reply[0] == 200, single_reply
    assert health == 200


async def test_a_signed_provider_callback_with_a_nul_is_400_and_stores_nothing(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeTwilio()
    monkeypatch.setenv("CIMHUB_TEST_TWILIO_TOKEN", fake.auth_token)
    await fake.start()
    channel = Channel(
        "sms-twilio",
        "SMS",
        "twilio",
        lane="+15005550006",
        settings={
            "account_sid": fake.account_sid,
            "auth_token_env": "CIMHUB_TEST_TWILIO_TOKEN",
            "base_url": fake.url,
        },
    )
    try:
        async with inbound_hub(db_url, channels=(*DEFAULT_CHANNELS, channel)) as hub:
            url = f"http://127.0.0.1:{hub.http_port}/callbacks/sms-twilio"
            params = fake.inbound_params("+447911123456", "+15005550006", "STOP\x00please")
            status, _, body = await fake.post_signed(url, params)
            counts = await row_counts(hub)
            health = await _healthz(hub)
    finally:
        await fake.stop()
    assert status == 400, body
    assert "inbound[0].text" in str(body)
    assert counts["inbound_messages"] == 0 and counts["events"] == 0
    assert health == 200
