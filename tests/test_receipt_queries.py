"""A receipt that never comes: the provider is asked where it can be, else the message expires.

Twilio's Message resource answers for what it holds; the sandbox cannot be
asked. The fake Twilio never calls back unless told to, so every message
here is one whose status callback was lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.base import AdapterContext, PermanentProviderError, RetryableProviderError
from adapters.twilio import TwilioSmsAdapter
from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import outbound_pb2 as o
from fakes.twilio import FakeTwilio
from server.app import Hub
from server.config import DEFAULT_CHANNELS
from server.domain.content import parse_content
from server.domain.models import Channel, Delivery
from server.domain.status import DeliveryStatus
from support.hub import AUTH_HEADERS, channel_to, rest_call, running_hub
from support.net import loopback_http

TOKEN_VAR = "CIMHUB_TEST_TWILIO_TOKEN"
# Receipts are given up on (or asked for) 0.3 s after submission, in quick rounds.
QUICK = {
    "receipt_timeout_ms": 300,
    "receipt_sweep_interval": 0.05,
    "receipt_query_interval_ms": 100,
    "receipt_query_limit": 3,
    "receipt_query_ceiling_ms": 60_000,
}


def twilio_channel(fake: FakeTwilio) -> Channel:
    return Channel(
        "sms-twilio",
        "SMS",
        "twilio",
        lane="+15005550006",
        settings={
            "account_sid": fake.account_sid,
            "auth_token_env": TOKEN_VAR,
            "base_url": fake.url,
            "timeout_seconds": "2",
        },
    )


@pytest.fixture
async def twilio(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as fake:
        monkeypatch.setenv(TOKEN_VAR, fake.auth_token)
        yield fake


async def _send(hub: Hub, channel_id: str) -> str:
    async with channel_to(hub) as channel:
        reply = await mg.MessagingServiceStub(channel).SendMessage(
            m.SendMessageRequest(
                channel_id=channel_id,
                type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
                to=o.OutboundContact(phone="+447911100001"),
                text=o.OutboundText(body="hello"),
            )
        )
    message_id: str = reply.message_id
    return message_id


async def _message(hub: Hub, message_id: str) -> dict[str, Any]:
    status, body = await rest_call(hub, "GET", f"/api/v1/messages/{message_id}", AUTH_HEADERS)
    assert status == 200, body
    message: dict[str, Any] = body["data"]["message"]
    return message


async def _reaches(
    hub: Hub, message_id: str, wanted: set[str], within: float = 10
) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while (message := await _message(hub, message_id))["status"] not in wanted:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return message


async def _final_step(hub: Hub, message_id: str, kind: str) -> dict[str, Any]:
    path = f"/api/v1/messages/{message_id}/timeline"
    status, body = await rest_call(hub, "GET", path, AUTH_HEADERS)
    assert status == 200, body
    steps: list[dict[str, Any]] = body["data"]["steps"]
    return [s for s in steps if s["kind"] == kind][-1]


async def _submitted_sid(hub: Hub, message_id: str, twilio: FakeTwilio) -> str:
    message = await _reaches(hub, message_id, {"SUBMITTED"})
    sid: str = message["attemptLog"][-1]["providerMessageId"]
    assert sid in twilio.messages
    return sid


def _lookups(twilio: FakeTwilio, sid: str) -> list[int]:
    return [status for looked_up, status in twilio.lookups if looked_up == sid]


async def test_a_lost_status_callback_is_made_good_by_asking_twilio(
    db_url: str, twilio: FakeTwilio
) -> None:
    channels = (*DEFAULT_CHANNELS, twilio_channel(twilio))
    async with running_hub(
        db_url, channels=channels, **{**QUICK, "receipt_query_limit": 50}
    ) as hub:
        message_id = await _send(hub, "sms-twilio")
        sid = await _submitted_sid(hub, message_id, twilio)
        twilio.set_status(sid, "delivered")  # and its callback never comes
        message = await _reaches(hub, message_id, {"DELIVERED", "EXPIRED"})
        receipt = await _final_step(hub, message_id, "RECEIPT")
    assert [h["status"] for h in message["history"]] == ["ACCEPTED", "SUBMITTED", "DELIVERED"]
    reason = message["history"][-1]["reason"]
    assert "status query" in reason and "'delivered'" in reason
    assert receipt["status"] == "DELIVERED" and "status query" in receipt["reason"]
    assert _lookups(twilio, sid)[-1] == 200


async def test_a_failure_twilio_reports_when_asked_carries_its_error_code(
    db_url: str, twilio: FakeTwilio
) -> None:
    channels = (*DEFAULT_CHANNELS, twilio_channel(twilio))
    async with running_hub(
        db_url, channels=channels, **{**QUICK, "receipt_query_limit": 50}
    ) as hub:
        message_id = await _send(hub, "sms-twilio")
        sid = await _submitted_sid(hub, message_id, twilio)
        twilio.set_status(sid, "failed", error_code=30008)
        message = await _reaches(hub, message_id, {"FAILED", "EXPIRED"})
    assert message["status"] == "FAILED"
    assert "30008" in message["history"][-1]["reason"]
    assert "status query" in message["history"][-1]["reason"]


async def test_a_message_twilio_calls_sent_for_ever_expires_after_the_query_limit(
    db_url: str, twilio: FakeTwilio
) -> None:
    channels = (*DEFAULT_CHANNELS, twilio_channel(twilio))
    async with running_hub(db_url, channels=channels, **QUICK) as hub:
        message_id = await _send(hub, "sms-twilio")
        sid = await _submitted_sid(hub, message_id, twilio)
        twilio.set_status(sid, "sent")
        message = await _reaches(hub, message_id, {"EXPIRED", "DELIVERED"})
        final = await _final_step(hub, message_id, "FINAL")
    assert [h["status"] for h in message["history"]] == ["ACCEPTED", "SUBMITTED", "EXPIRED"]
    reason = message["history"][-1]["reason"]
    assert "after 3 status queries" in reason and "'sent'" in reason
    assert final["status"] == "EXPIRED" and final["reason"] == reason
    # Asked exactly up to the limit, each time answered.
    assert _lookups(twilio, sid) == [200, 200, 200]


async def test_a_status_query_twilio_fails_leaves_the_message_to_be_asked_again(
    db_url: str, twilio: FakeTwilio
) -> None:
    channels = (*DEFAULT_CHANNELS, twilio_channel(twilio))
    # One "still on its way" answer would expire it: failures must not count as answers.
    async with running_hub(db_url, channels=channels, **{**QUICK, "receipt_query_limit": 1}) as hub:
        message_id = await _send(hub, "sms-twilio")
        sid = await _submitted_sid(hub, message_id, twilio)
        twilio.lookup_failures = 3
        twilio.set_status(sid, "delivered")
        message = await _reaches(hub, message_id, {"DELIVERED", "EXPIRED"})
    assert message["status"] == "DELIVERED"
    assert _lookups(twilio, sid) == [503, 503, 503, 200]


async def test_status_queries_that_keep_failing_end_at_the_ceiling(
    db_url: str, twilio: FakeTwilio
) -> None:
    channels = (*DEFAULT_CHANNELS, twilio_channel(twilio))
    rules = {**QUICK, "receipt_query_ceiling_ms": 1000}
    async with running_hub(db_url, channels=channels, **rules) as hub:
        twilio.lookup_failures = 10**6
        message_id = await _send(hub, "sms-twilio")
        sid = await _submitted_sid(hub, message_id, twilio)
        message = await _reaches(hub, message_id, {"EXPIRED", "DELIVERED"})
    assert message["status"] == "EXPIRED"
    assert "gave no final status" in message["history"][-1]["reason"]
    assert len(_lookups(twilio, sid)) >= 2 and set(_lookups(twilio, sid)) == {503}


async def test_a_sandbox_message_without_a_receipt_expires_without_asking(
    db_url: str, twilio: FakeTwilio
) -> None:
    # The sandbox's receipt would come in an hour: as good as never.
    async with running_hub(db_url, sandbox_delivery_delay=3600, **QUICK) as hub:
        message_id = await _send(hub, "sandbox-sms")
        message = await _reaches(hub, message_id, {"EXPIRED", "DELIVERED"})
        final = await _final_step(hub, message_id, "FINAL")
    assert [h["status"] for h in message["history"]] == ["ACCEPTED", "SUBMITTED", "EXPIRED"]
    reason = message["history"][-1]["reason"]
    assert "no receipt" in reason and "offers no status query" in reason
    assert final["reason"] == reason
    assert twilio.lookups == []


# -- the adapter on its own ---------------------------------------------------------


@pytest.fixture
async def adapter(twilio: FakeTwilio) -> AsyncIterator[TwilioSmsAdapter]:
    ctx = AdapterContext(
        public_url="http://127.0.0.1:9", fetcher=loopback_http(), env={TOKEN_VAR: twilio.auth_token}
    )
    a = TwilioSmsAdapter(twilio_channel(twilio), ctx)
    yield a
    await a.close()


async def _accepted_sid(adapter: TwilioSmsAdapter) -> str:
    delivery = Delivery(
        "m-1", "t-1", "sms-twilio", "+447700900123", "text", "hi", parse_content({"text": "hi"}), 1
    )
    return (await adapter.send(delivery)).provider_message_id


@pytest.mark.parametrize(
    ("twilio_status", "expected"),
    [
        ("queued", None),
        ("accepted", None),
        ("sending", None),
        ("sent", None),
        ("something_new", None),
        ("delivered", DeliveryStatus.DELIVERED),
        ("read", DeliveryStatus.READ),
        ("undelivered", DeliveryStatus.UNDELIVERED),
        ("failed", DeliveryStatus.FAILED),
        ("canceled", DeliveryStatus.FAILED),
    ],
)
async def test_twilio_message_status_when_asked(
    adapter: TwilioSmsAdapter,
    twilio: FakeTwilio,
    twilio_status: str,
    expected: DeliveryStatus | None,
) -> None:
    sid = await _accepted_sid(adapter)
    twilio.set_status(sid, twilio_status)
    answer = await adapter.query_status(sid)
    assert answer.status is expected
    assert answer.said == twilio_status
    if twilio_status in ("failed", "undelivered"):
        assert answer.reason.startswith({"failed": "30008", "undelivered": "30003"}[twilio_status])
    lookup = twilio.requests[-1]
    assert (lookup.method, lookup.path) == (
        "GET",
        f"/2010-04-01/Accounts/{twilio.account_sid}/Messages/{sid}.json",
    )
    assert lookup.headers["Authorization"].startswith("Basic ")


async def test_twilio_trouble_when_asked_is_retryable_an_unknown_sid_is_not(
    adapter: TwilioSmsAdapter, twilio: FakeTwilio
) -> None:
    sid = await _accepted_sid(adapter)
    twilio.lookup_failures = 1
    with pytest.raises(RetryableProviderError):
        await adapter.query_status(sid)
    with pytest.raises(PermanentProviderError) as unknown:
        await adapter.query_status("SM" + "f" * 32)
    assert unknown.value.code == "20404"
    assert (await adapter.query_status(sid)).said == "queued"
