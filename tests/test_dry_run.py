"""POST /api/v2/message/validate (ValidateBatch): what a send would do, storing nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import ParseDict
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from fakes.rbm import FakeRbm
from fakes.twilio import FakeTwilio
from server.api.context import DEFAULT_TENANT
from server.config import DEFAULT_CHANNELS
from server.domain.models import Channel
from server.domain.status import DeliveryStatus
from server.storage.schema import metadata
from support.hub import channel_to, rest_session, running_hub

TOKEN_VAR = "CIMHUB_TEST_TWILIO_DRY_RUN_TOKEN"
LANE = "+15005550006"
LONG = "Offer details: " + "all plans half price this week only " * 5
CURLY = "\u201cSpecial\u201d offer \u2013 don\u2019t miss it\u2026"


def numbers(count: int, start: int) -> list[str]:
    return [f"+4479111{i:05d}" for i in range(2000 + start, 2000 + start + count)]


def mixed_body() -> dict[str, Any]:
    """20 destinations: GSM-7 and UCS-2, one to three segments, the GSM extension,
    typographic characters, an emoji, and three with a variable missing."""
    groups = [
        ({"name": "Ann", "extra": "See you."}, 4),
        ({"name": "Zo\u00eb", "extra": "Bis bald."}, 3),  # ë is not GSM-7
        ({"name": "Bob", "extra": LONG}, 3),  # two GSM-7 segments
        ({"name": "Cy", "extra": CURLY}, 3),  # UCS-2 for typography alone
        ({}, 3),  # no name, no extra: refused one by one
        ({"name": "Di", "extra": "\U0001f389 " + LONG}, 2),  # emoji: UCS-2, 4 segments
        ({"name": "Ed", "extra": "Only 5\u20ac {today}"}, 2),  # € and braces: 2 septets each
    ]
    to, start = [], 0
    for i, (subs, count) in enumerate(groups):
        to.append(
            {"msisdn": numbers(count, start), "correlationId": f"g{i}", "substitutions": subs}
        )
        start += count
    return {
        "channel": "sms",
        "from": LANE,
        "to": to,
        "substitutions": {"code": "0042"},
        "content": {"type": "text", "text": "Hi $(name), code $(code). $(extra)"},
    }


def twilio_channel(fake: FakeTwilio) -> Channel:
    return Channel(
        "sms-twilio",
        "SMS",
        "twilio",
        lane=LANE,
        settings={
            "account_sid": fake.account_sid,
            "auth_token_env": TOKEN_VAR,
            "base_url": fake.url,
            "timeout_seconds": "2",
        },
    )


@pytest.fixture
async def fake_twilio(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio()
    monkeypatch.setenv(TOKEN_VAR, fake.auth_token)
    async with fake:
        yield fake


async def row_counts(hub: Any) -> dict[str, int]:
    async with hub.store.engine.connect() as conn:
        return {
            name: (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            for name, table in metadata.tables.items()
        }


async def _post(http: Any, hub: Any, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    async with http.post(f"http://127.0.0.1:{hub.http_port}{path}", json=body) as resp:
        return resp.status, await resp.json()


async def _submitted(hub: Any, ids: list[str]) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            found = {i: await hub.store.messages.get_message(DEFAULT_TENANT, i) for i in ids}
            if all(f.status is DeliveryStatus.SUBMITTED for f in found.values()):
                return found
            await asyncio.sleep(0.05)


async def test_dry_run_matches_the_send_of_20_mixed_destinations_and_stores_nothing(
    db_url: str, fake_twilio: FakeTwilio
) -> None:
    body = mixed_body()
    channels = (*DEFAULT_CHANNELS, twilio_channel(fake_twilio))
    async with running_hub(db_url, channels=channels) as hub, rest_session() as http:
        before = await row_counts(hub)
        status, checked = await _post(http, hub, "/api/v2/message/validate", body)
        assert status == 200, checked
        after = await row_counts(hub)
        requests_after_dry_run = len(fake_twilio.requests)
        status, sent = await _post(http, hub, "/api/v2/message/send", body)
        assert status == 202, sent
        ids = [r["messageId"] for r in sent["results"] if r.get("messageId")]
        stored = await _submitted(hub, ids)
    assert after == before
    assert requests_after_dry_run == 0
    assert checked["meta"]["accepted"] is True
    checks, results = checked["results"], sent["results"]
    assert len(checks) == len(results) == 20
    by_sid_body = {msg.sid: msg for msg in fake_twilio.messages.values()}
    encodings = set()
    for check, result in zip(checks, results, strict=True):
        assert check["destination"] == result["destination"]
        assert check.get("correlationId") == result.get("correlationId")
        assert check.get("error", "") == result.get("error", "")
        assert check.get("sendable", False) == bool(result.get("messageId")), check
        if not result.get("messageId"):
            continue
        message = stored[result["messageId"]]
        sms = check["sms"]
        sent_by_twilio = by_sid_body[message.provider_message_id]
        assert check["channelId"] == message.channel_id == "sms-twilio"
        assert check["route"] == ["sms-twilio"]
        assert check["text"] == message.text == sent_by_twilio.body == sms["text"]
        # The segments the adapter reported, and the ones Twilio billed.
        assert sms["segments"] == message.segments == sent_by_twilio.num_segments
        assert check["consent"] == "UNKNOWN"
        encodings.add((sms["encoding"], sms["segments"]))
    assert [c["error"] for c in checks if c.get("error")] == [
        r["error"] for r in results if r.get("error")
    ]
    assert sum(1 for c in checks if c.get("error")) == 3
    # The mix covers both encodings and one to four segments.
    assert {("GSM-7", 1), ("UCS-2", 1), ("GSM-7", 2), ("UCS-2", 4)} <= encodings
    curly = checks[10]["sms"]
    assert curly["encoding"] == "UCS-2"
    assert curly["ucs2Characters"] == ["\u201c", "\u201d", "\u2013", "\u2019", "\u2026"]
    assert curly["smartEncoding"].get("segmentsSaved", 0) == 0  # short: one segment either way
    assert curly["smartEncoding"]["encodingAfter"] == "GSM-7"
    assert checks[4]["sms"]["ucs2Characters"] == ["\u00eb"]


def refused_body(**extra: Any) -> dict[str, Any]:
    """A body a send refuses whole: one number that is not one, an email on SMS."""
    return {
        "channel": "sms",
        "from": "CNNECT",
        "to": [
            {"msisdn": ["+447911100001", "not a number", "+447911100002"]},
            {"msisdn": ["+447911100003"], "email": ["a@example.com"]},
        ],
        "content": {"type": "text", "text": "Hello \u2018you\u2019"},
        **extra,
    }


async def test_a_refused_body_gets_the_send_s_refusal_and_each_address_its_own(
    db_url: str,
) -> None:
    body = refused_body(sendAt="tomorrow")
    request = ParseDict(body, m.SendBatchRequest())
    async with running_hub(db_url) as hub, channel_to(hub) as channel, rest_session() as http:
        stub = mg.MessagingServiceStub(channel)
        checked = await stub.ValidateBatch(request)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SendBatch(request)
        addresses_only = await stub.ValidateBatch(ParseDict(refused_body(), m.SendBatchRequest()))
        rest_status, rest_checked = await _post(http, hub, "/api/v2/message/validate", body)
        send_status, rest_refused = await _post(http, hub, "/api/v2/message/send", body)
        counts = await row_counts(hub)
    rich = rpc_status.from_call(refused.value)
    assert rich is not None
    bad = error_details_pb2.BadRequest()
    next(d for d in rich.details if d.Is(bad.DESCRIPTOR)).Unpack(bad)
    sent_violations = [(v.field, v.description) for v in bad.field_violations]
    assert not checked.accepted
    assert checked.refusal.status_key == refused.value.code().name == "INVALID_ARGUMENT"
    assert checked.refusal.message == refused.value.details()
    assert [(e.field, e.description) for e in checked.refusal.errors] == sent_violations
    assert {f for f, _ in sent_violations} == {"to[0].msisdn[1]", "to[1].email", "sendAt"}
    # Over REST, the dry run's refusal reads like the send's 400.
    assert rest_status == 200 and send_status == 400
    refusal = rest_checked["meta"]["refusal"]
    assert refusal["statusKey"] == rest_refused["statusKey"]
    assert refusal["reason"] == rest_refused["messageKey"]
    assert [(e["field"], e["description"]) for e in refusal["errors"]] == [
        (e["field"], e["description"]) for e in rest_refused["errors"]
    ]
    results = checked.results
    assert [r.destination for r in results] == [
        "+447911100001",
        "not a number",
        "+447911100002",
        "+447911100003",
    ]
    assert [[e.field for e in r.errors] for r in results] == [
        [],
        ["to[0].msisdn[1]"],
        [],
        ["to[1].email"],
    ]
    assert not any(r.sendable for r in results)
    # Refused for its addresses alone, the body's other addresses still get
    # their text and its cost.
    usable = addresses_only.results
    assert not addresses_only.accepted and not any(r.sendable for r in usable)
    assert usable[0].text == "Hello \u2018you\u2019"
    assert usable[0].sms.encoding == "UCS-2" and usable[0].sms.segments == 1
    assert usable[3].text == usable[0].text
    assert usable[1].text == "" and not usable[1].HasField("sms")
    assert counts["messages"] == 0 and counts["idempotency"] == 0


async def test_smart_encoding_replaces_typography_when_asked_and_saves_segments(
    db_url: str, fake_twilio: FakeTwilio
) -> None:
    # 80 characters with curly quotes: two UCS-2 segments, one once replaced.
    text = "\u201cWe\u2019re open\u201d \u2013 " + "a" * 60 + "\u2026"
    body: dict[str, Any] = {
        "channel": "sms",
        "from": LANE,
        "to": [{"msisdn": ["+447911100009"]}],
        "content": {"type": "text", "text": text},
    }
    smart_body = {**body, "options": {"smartEncoding": True}}
    channels = (*DEFAULT_CHANNELS, twilio_channel(fake_twilio))
    async with running_hub(db_url, channels=channels) as hub, rest_session() as http:
        _, plain = await _post(http, hub, "/api/v2/message/validate", body)
        _, smart = await _post(http, hub, "/api/v2/message/validate", smart_body)
        _, sent_plain = await _post(http, hub, "/api/v2/message/send", body)
        _, sent_smart = await _post(http, hub, "/api/v2/message/send", smart_body)
        ids = [sent_plain["results"][0]["messageId"], sent_smart["results"][0]["messageId"]]
        stored = await _submitted(hub, ids)
    replaced = '"We\'re open" - ' + "a" * 60 + "..."
    before, after = plain["results"][0]["sms"], smart["results"][0]["sms"]
    assert (before["encoding"], before["segments"], before["text"]) == ("UCS-2", 2, text)
    assert before["smartEncoding"].get("applied", False) is False
    assert before["smartEncoding"]["segmentsBefore"] == 2
    assert before["smartEncoding"]["segmentsAfter"] == 1
    assert before["smartEncoding"]["segmentsSaved"] == 1
    assert [
        (r["character"], r.get("replacement", ""), r["count"])
        for r in before["smartEncoding"]["replacements"]
    ] == [
        ("\u201c", '"', 1),
        ("\u2019", "'", 1),
        ("\u201d", '"', 1),
        ("\u2013", "-", 1),
        ("\u2026", "...", 1),
    ]
    assert (after["encoding"], after["segments"], after["text"]) == ("GSM-7", 1, replaced)
    assert after["smartEncoding"]["applied"] is True
    assert after["smartEncoding"]["segmentsSaved"] == 1
    assert after.get("ucs2Characters", []) == []
    plain_msg, smart_msg = stored[ids[0]], stored[ids[1]]
    assert (plain_msg.text, plain_msg.segments) == (text, 2)
    assert (smart_msg.text, smart_msg.segments) == (replaced, 1)
    bodies = sorted(msg.body for msg in fake_twilio.messages.values())
    assert bodies == sorted([text, replaced])


RBM_TOKEN_VAR = "CIMHUB_TEST_RBM_DRY_RUN_TOKEN"
RBM_CLIENT_VAR = "CIMHUB_TEST_RBM_DRY_RUN_CLIENT_TOKEN"


async def test_the_dry_run_route_is_the_fallback_a_send_takes(
    db_url: str, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_rcs = "+447911000111"
    monkeypatch.setenv(RBM_TOKEN_VAR, "rbm-token")
    monkeypatch.setenv(RBM_CLIENT_VAR, "rbm-client-token")
    async with FakeRbm(token="rbm-token", agent_id="agent_1", non_capable={not_rcs}) as rbm:
        rcs = Channel(
            "rcs-main",
            "RCS",
            "rbm",
            settings={
                "agent_id": "agent_1",
                "token_env": RBM_TOKEN_VAR,
                "client_token_env": RBM_CLIENT_VAR,
                "base_url": rbm.url,
                "sms_fallback_channel": "sms-twilio",
            },
        )
        channels = (
            *(c for c in DEFAULT_CHANNELS if c.contact_type != "RCS"),
            rcs,
            twilio_channel(fake_twilio),
        )
        fallback_text = "Your code is 4242 \u2013 " + "valid for ten minutes " * 4
        body: dict[str, Any] = {
            "channel": "rcs",
            "from": "agent_1",
            "to": [{"msisdn": [not_rcs]}],
            "options": {"smsFallback": True, "smsSenderId": LANE, "text": fallback_text},
            "content": {"type": "text", "text": "Your code is 4242 (rich)"},
        }
        no_fallback = {**body, "options": {"text": fallback_text}}
        async with running_hub(db_url, channels=channels) as hub, rest_session() as http:
            _, checked = await _post(http, hub, "/api/v2/message/validate", body)
            _, plain = await _post(http, hub, "/api/v2/message/validate", no_fallback)
            status, sent = await _post(http, hub, "/api/v2/message/send", body)
            assert status == 202, sent
            message_id = sent["results"][0]["messageId"]
            async with asyncio.timeout(20):
                while True:
                    got = await hub.store.messages.get_message(DEFAULT_TENANT, message_id)
                    if got.status is DeliveryStatus.SUBMITTED:
                        break
                    await asyncio.sleep(0.05)
    check = checked["results"][0]
    assert check["channelId"] == "rcs-main"
    assert check["route"] == [a.channel_id for a in got.attempt_log] == ["rcs-main", "sms-twilio"]
    sms = check["sms"]
    [sent_sms] = fake_twilio.messages.values()
    assert sms["text"] == sent_sms.body == fallback_text
    assert (sms["encoding"], sms["segments"]) == ("UCS-2", 2)
    assert sms["segments"] == got.attempt_log[-1].segments == sent_sms.num_segments
    assert sms["smartEncoding"]["segmentsAfter"] == 1
    assert plain["results"][0]["route"] == ["rcs-main"]
    assert "sms" not in plain["results"][0]
